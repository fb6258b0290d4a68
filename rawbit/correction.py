"""The correction filter: a 3x3 linear filter across the three colours, fitted to each photo by the
encoder and applied by the decoder to the learned photo (format 6; rawbit/bitstream.py).

On cameras the model never saw, part of the learned photo's error is the same everywhere in the
photo: a colour cast, a softness, a chroma plane that sits a fraction of a pixel off (the Kodak
DC50's blue, its best match with the reference rendering is a pixel diagonally away). The encoder
holds the reference, so it measures that error and sends its linear part: each output colour is
a 3x3 neighbourhood of all three colours plus an offset,

    out[c] = sum over colours k and taps (dy, dx) of w[c, k, dy, dx] * photo[k, y + dy, x + dx] + b[c]

84 coefficients, least squares against LibRaw's rendering of the file's own sensor data, stored as
int16 in 1/4096 (168 bytes). Measured on the real test cameras at rate points 3-7, fitted on the
whole photo: +0.6 to +1.9 dB (Kodak DC50), +0.8 to +1.3 (Blackmagic), +0.13 to +0.15 (Nikon D1);
a colour matrix alone gave +0.2-0.3, +0.6-1.2 and +0.04; 5x5 and 7x7 taps added under 0.1 dB
over 3x3. Like the adaptive loop filter of video codecs, it is the decoder's cheapest tool: one
small convolution.

The tone filter (format 8, 222 bytes) adds nine terms of each pixel per output colour: the squares,
products and cubes of its colours. Fitted on the whole photo at points 3 / 4 / 6 it gained over the
plain filter +0.59 / +0.34 / +0.21 dB on the Blackmagic (a cinema camera's flat profile against
LibRaw's curve), +0.09 / +0.10 / +0.06 on the DC50 and +0.06 / +0.03 / +0.02 on the Nikon D1
(stop 27). Both are fitted from one pass over the pixels; the encoder sends whichever gains most
for its bytes (`best`), or none.

On a large photo the filter is fitted on GRID x GRID patches spread over it. At a rate point the
encoder does not synthesise the whole learned photo (that is the decoder's cost, ~6 s at 12 MP): it
synthesises those patches, each with the decoder's own halo of latent context, and has LibRaw
render the same patches (~0.9 s at any size). At a detail setting, which has both whole, it cuts
them out. Spread patches matter: one central 1024-pixel crop fitted the Blackmagic 0.4-0.8 dB
*below* no filter; 4 x 4 patches of 256 pixels came within 0.06 dB of the fit on the whole photo.
A photo under GRID patches a side (1 280 pixels) is fitted whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .bitstream import CORRECTION_SIZE, TONE_CORRECTION_SIZE
from .errors import BitstreamError
from .metrics import DB_PER_DOUBLING

# Bumped whenever what the filter does or when it is sent changes (benchmark caches key on it).
CODING = 4
TAPS = 3
FEATURES = 3 * TAPS * TAPS + 1  # per output colour: every tap of every colour, and an offset
# The tone filter (format 8) adds, per output colour, the centre pixel's squares, products and cubes
# of the three colours: a tone curve that depends on the colour (highlight roll-off, a flatter
# or steeper camera profile than LibRaw's), which no linear filter can bend.
TONE = 9
SCALE = 4096  # int16 fixed point: coefficients within +-8
assert 3 * FEATURES * 2 == CORRECTION_SIZE and 3 * (FEATURES + TONE) * 2 == TONE_CORRECTION_SIZE
PATCH = 256  # sRGB pixels a side of a fitting patch
GRID = 4  # patches a side on a large photo
MARGIN = 16  # pixels LibRaw renders around a patch and the fit drops (its AHD looks that far)


def identity() -> Tensor:
    """(3, FEATURES) float64: the filter that changes nothing."""
    w = torch.zeros(3, FEATURES, dtype=torch.float64)
    centre = TAPS * TAPS // 2
    for c in range(3):
        w[c, c * TAPS * TAPS + centre] = 1.0
    return w


def _tone_terms(x: Tensor) -> Tensor:
    """(TONE, ...) the tone filter's terms of a (3, ...) photo on [0, 1]: r², g², b², rg, gb, rb,
    r³, g³, b³ of its colours centred on [-1, 1] (2x - 1). Centred, the terms are far less alike
    than the powers of x itself (x³ follows x² closely on [0, 1]): their least-squares weights stay
    within the int16 range, where the powers of x needed up to +-11 on the Blackmagic."""
    r, g, b = 2 * x[0] - 1, 2 * x[1] - 1, 2 * x[2] - 1
    return torch.stack([r * r, g * g, b * b, r * g, g * b, r * b, r * r * r, g * g * g, b * b * b])


def _features(padded: Tensor) -> Tensor:
    """(FEATURES + TONE, h*w) float64: every tap of a (3, h + 2, w + 2) padded photo, a one, and the
    centre pixel's tone terms."""
    u = F.unfold(padded[None].double(), TAPS)[0]
    centre = padded[:, TAPS // 2 : padded.shape[1] - TAPS // 2, TAPS // 2 : padded.shape[2] - TAPS // 2]
    tone = _tone_terms(centre.double()).reshape(TONE, -1)
    return torch.cat([u, torch.ones(1, u.shape[1], dtype=torch.float64), tone])


def apply(photo: Tensor, weights: Tensor, rows: int = 64) -> Tensor:
    """(3, H, W) float photo on [0, 1] -> the filtered photo (same dtype), edges replicated; a
    tone filter's (3, FEATURES + TONE) weights add their terms of each pixel.

    Convolved `rows` rows at a time: oneDNN unfolds its input, 9x the photo at once (1.3 GB for
    12 MP), which lifted a decode's peak by 0.9 GiB; 64 rows also ran 2x faster than 256."""
    w = weights.to(photo.dtype)
    kernel = w[:, : FEATURES - 1].reshape(3, 3, TAPS, TAPS)
    tone = w[:, FEATURES:]
    p = F.pad(photo[None], (TAPS // 2,) * 4, mode="replicate")
    out = torch.empty_like(photo)
    for top in range(0, photo.shape[1], rows):
        bottom = min(top + rows, photo.shape[1])
        out[:, top:bottom] = F.conv2d(p[:, :, top : bottom + TAPS - 1], kernel, bias=w[:, FEATURES - 1])[0]
        if tone.shape[1]:
            terms = _tone_terms(photo[:, top:bottom])
            out[:, top:bottom] += torch.einsum("ct,thw->chw", tone, terms)
    return out


def fit(pairs: list[tuple[Tensor, np.ndarray, int]], rows: int = 128, tone: bool = False) -> tuple[Tensor, float]:
    """Least squares over (photo (3, h, w) on [0, 1], target (h, w, 3) uint8, border) pairs, the
    `border` pixels at each side of a pair left out of the sums: (weights as stored, the gain in
    dB on these pixels, 8-bit rounding aside); with `tone`, the tone filter's. The sums run over
    `rows` rows at a time: a 12 MP photo's features would be 2.7 GB at once."""
    return _solve(_sums(pairs, rows), FEATURES + TONE if tone else FEATURES)


def best(pairs: list[tuple[Tensor, np.ndarray, int]], file_bytes: int) -> Tensor | None:
    """The filter that gains most for its bytes on a file of `file_bytes` without one (the plain
    filter or the tone filter, both fitted from one pass over the pixels), or None when neither
    pays."""
    sums = _sums(pairs)
    choice, score = None, 0.0
    for n in (FEATURES, FEATURES + TONE):
        weights, gain_db = _solve(sums, n)
        size = 3 * n * 2  # int16 coefficients
        if not worth(gain_db, file_bytes, size):
            continue
        net = gain_db - _cost_db(size, file_bytes)  # what it gains once its bytes are paid for
        if choice is None or net > score:
            choice, score = weights, net
    return choice


_Sums = tuple[Tensor, Tensor, float]  # the features' Gram matrix, their products with the target, its energy


def _sums(pairs: list[tuple[Tensor, np.ndarray, int]], rows: int = 128) -> _Sums:
    n = FEATURES + TONE
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, 3, dtype=torch.float64)
    energy = 0.0
    for photo, target, border in pairs:
        padded = F.pad(photo[None].float(), (TAPS // 2,) * 4, mode="replicate")[0]
        h, w = photo.shape[-2:]
        for top in range(border, h - border, rows):
            bottom = min(top + rows, h - border)
            a = _features(padded[:, top : bottom + TAPS - 1, border : w - border + TAPS - 1])
            b = torch.from_numpy(np.asarray(target[top:bottom, border : w - border], dtype=np.float64) / 255.0)
            b = b.reshape(-1, 3)
            gram += a @ a.T
            cross += a @ b
            energy += float((b * b).sum())
    return gram, cross, energy


def _solve(sums: _Sums, n: int) -> tuple[Tensor, float]:
    """(weights as stored, gain in dB) of the first `n` features' least-squares filter."""
    gram, cross, energy = sums[0][:n, :n], sums[1][:n], sums[2]
    unchanged = torch.zeros(3, n, dtype=torch.float64)
    unchanged[:, :FEATURES] = identity()

    def error(weights: Tensor) -> float:  # the squared error of these weights, from the sums alone
        return float((weights @ gram * weights).sum() - 2 * (weights * cross.T).sum()) + energy

    ridge = 1e-9 * float(gram.diagonal().sum())
    try:
        weights = torch.linalg.solve(gram + ridge * torch.eye(n, dtype=torch.float64), cross).T
    except RuntimeError:  # singular: a photo without variation has nothing to fit
        return unchanged, 0.0
    if not torch.isfinite(weights).all() or float(weights.abs().max()) * SCALE >= 32767:
        return unchanged, 0.0
    weights = torch.round(weights * SCALE) / SCALE
    before, after = error(unchanged), error(weights)
    if not (before > 0 and after > 0 and after < before):
        return weights, 0.0
    return weights, 10.0 * math.log10(before / after)


def worth(gain_db: float, file_bytes: int, size: int = CORRECTION_SIZE) -> bool:
    """Whether a filter of `size` bytes that gains `gain_db` pays for its bytes on a file of
    `file_bytes` without it (each doubling of the file charged metrics.DB_PER_DOUBLING)."""
    return gain_db > _cost_db(size, file_bytes)


def _cost_db(size: int, file_bytes: int) -> float:
    return DB_PER_DOUBLING * math.log2(1.0 + size / max(file_bytes, 1))


def pack(weights: Tensor) -> bytes:
    return (torch.round(weights * SCALE).to(torch.int64).numpy().astype(">i2")).tobytes()


def unpack(data: bytes, name: str = "input") -> Tensor:
    """(3, FEATURES) float64 weights from the stored bytes, (3, FEATURES + TONE) for a tone filter."""
    if len(data) not in (CORRECTION_SIZE, TONE_CORRECTION_SIZE):
        raise BitstreamError(f"{name}: damaged .rbit file (a correction filter of {len(data)} bytes)")
    values = np.frombuffer(data, dtype=">i2").astype(np.float64).reshape(3, -1)
    return torch.from_numpy(values / SCALE)


def patches(photo: Tensor, target: np.ndarray) -> list[tuple[Tensor, np.ndarray, int]]:
    """The pairs `fit` takes from a whole (3, H, W) photo and its (H, W, 3) target, both at hand
    (a detail setting has both): the patches `patch_boxes` spreads over a large photo (the same
    fit as on the whole, at a sixteenth of the sums: 3.4 s at 12 MP), else the whole photo."""
    h, w = photo.shape[-2:]
    boxes = patch_boxes((0, 0, h, w), 1)
    if not boxes:
        return [(photo, target, 0)]
    return [(photo[:, i : i + PATCH, j : j + PATCH], target[i : i + PATCH, j : j + PATCH], 1) for i, j in boxes]


def patch_boxes(visible: tuple[int, int, int, int], stride: int) -> list[tuple[int, int]]:
    """Top-left corners (sRGB pixels of the coded image, on the latent grid) of GRID x GRID patches
    spread over the `visible` box (top, left, bottom, right), MARGIN and more inside it; [] when
    the photo is too small for them not to overlap (then the whole photo is fitted)."""
    top, left, bottom, right = visible
    room = PATCH + 2 * (MARGIN + stride)
    if bottom - top < GRID * room or right - left < GRID * room:
        return []
    boxes = []
    for a in range(GRID):
        for b in range(GRID):
            i = top + (2 * a + 1) * (bottom - top) // (2 * GRID) - PATCH // 2
            j = left + (2 * b + 1) * (right - left) // (2 * GRID) - PATCH // 2
            boxes.append((-(-i // stride) * stride, -(-j // stride) * stride))  # onto the latent grid
    return boxes
