"""The archive layer: the photo's sensor data within a known bound, on top of the learned photo.

An archive setting (`--quality 13, 14` for the shipped models, rawbit/ladder.py) adds a second layer
to the file: the white-balanced sensor planes, each value within ±step/2 of the original on
LibRaw's output-curve scale, coded as the residual against a prediction made from the learned
photo. The decoder renders those planes with LibRaw's own pipeline (`render.render_planes`), so
the photo converges on the reference rendering as the step shrinks, which the learned decoder
alone does not: its PSNR stops rising near what its training taught it (~34 dB on the Nikon D1).

    learned photo, sRGB (3, H, W) --isp.unrender--> predicted planes --curve--> prediction
    sensor planes, white-balanced ----------------------------------curve--> - prediction
        -> minus what the planes decoded before predict (G1, then G2, R, B) -> round(/ step)
        -> rANS, one discretised Laplacian per 32 x 32 tile of each plane

Why this shape (measured on the real test cameras; numbers in docs/bench.md):
- The residual is taken on LibRaw's output curve, so one step is about the same error in the
  rendered photo in shadows and highlights; a linear step would be invisible in the highlights
  and coarse in the shadows.
- The learned photo as predictor: on the Nikon D1 at step 1/64 the planes cost 6.54 bpp coded
  alone, and 2.13 bpp + 0.72 bpp (the rate-point-9 photo) as a residual.
- The step is a bound on every value (l-infinity), as in near-lossless coding (Bai et al., CVPR
  2021: a learned lossy layer plus a quantised residual).
- Scales are sent per tile rather than inferred from the prediction: the symbols' probabilities
  then do not depend on the float32 synthesis, so the stream decodes identically on any machine.
  The prediction moves only the reconstruction: a +-1/65535 change of every pixel of the photo (the
  largest difference measured between CPUs) moved it by at most 1.5e-5 on the curve. Choosing the
  scales from the residuals of planes already decoded instead saved 2-4 % more (measured before
  the planes were chained); not built.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import isp, laplace
from .errors import BitstreamError

# The archive settings at the top of the quality ladder (rawbit/ladder.py): step = 2**-shift on the
# curve's [0, 1]. 1/128 is the coarsest above the finest detail setting on every real test photo:
# 1/64 (38.4 dB on the Kodak DC50) fell below detail step 16 (38.7 dB at fewer bits), since the
# DC50's colour matrix magnifies an error of the planes threefold. Files of any step 1/2 .. 1/4096
# decode (format 4 stores it); 1/64 was the default's quality 12 until 2026-12-03, and is again on
# a photo whose finest detail layer would outgrow quality 13 (ladder.Setting.archive_above).
SHIFTS = (7, 8)
# The learned layer under the archive one: this many rate points below the model's best (point 9
# of 11 for the shipped model, the cheapest sum of both layers on the Nikon D1 and the Kodak DC50).
BASE_BELOW_TOP = 2
TILE = 32  # plane pixels a side; one scale index (a byte before zlib) per tile and plane
# Planes in coding order, G1 first: each later one's residual is predicted from those decoded before
# it (and their 3x3 means), by least-squares coefficients sent as float32 (2 + 4 + 6 of them). The
# residuals of one photosite's colours share the learned photo's errors: -3 % (Nikon D1) to -12 %
# (Kodak DC50, Blackmagic) of the layer's bits against coding the planes independently.
ORDER = (1, 2, 0, 3)
_N_COEFFICIENTS = 2 + 4 + 6
_MAX_COEFFICIENT = 1e3
# Bumped whenever what the layer codes changes (benchmark caches key on it with the model's id).
CODING = 4


def levels(model: torch.nn.Module) -> int:
    """How many archive settings a model offers above its own rate points: 0 for a model that does
    not code RAW photos into a photo (a compression teacher, an ISP-Net)."""
    config = getattr(model, "config", None)
    codes_photos = hasattr(model, "compress_latent") and getattr(config, "output", "srgb") != "raw"
    return len(SHIFTS) if codes_photos and getattr(config, "input", "raw") != "srgb" else 0


def _on_curve(balanced: torch.Tensor) -> torch.Tensor:
    return isp.gamma_curve(balanced.double().clamp(0.0, 1.0))


def _prediction(photo: torch.Tensor, cam_to_srgb: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(1, 3, H', W') learned photo at (at least) the coded size -> (4, h, w) on the curve."""
    _, h, w = shape
    predicted = isp.unrender(photo[:, :, : 2 * h, : 2 * w], cam_to_srgb.double().reshape(1, 3, 3))
    return _on_curve(predicted[0])


def plane_shape(coded_size: tuple[int, int]) -> tuple[int, int, int]:
    """(4, h, w) of the planes for a coded (height, width): the mosaic is padded to even sizes."""
    return 4, (coded_size[0] + 1) // 2, (coded_size[1] + 1) // 2


def encode(balanced: torch.Tensor, photo: torch.Tensor, cam_to_srgb: torch.Tensor, shift: int) -> bytes:
    """The archive stream of (4, h, w) white-balanced, clipped sensor planes given the learned
    photo the decoder will have (its synthesis output, before clamping and cropping)."""
    target = _on_curve(balanced)
    step = 2.0**-shift
    residual = (target - _prediction(photo, cam_to_srgb, target.shape)).numpy()
    q = np.zeros(residual.shape, dtype=np.int64)
    coefficients: list[np.ndarray] = []
    decoded: list[np.ndarray] = []  # the residuals the decoder will have rebuilt, in ORDER
    for c in ORDER:
        features = _features(decoded)
        if features is None:
            guess = 0.0
        else:
            fit = np.linalg.lstsq(features.reshape(len(features), -1).T, residual[c].reshape(-1), rcond=None)[0]
            # Nearly collinear features (a flat or clipped frame) can ask for any size: the decoder
            # refuses coefficients past the bound, so they are clipped here, which costs only rate.
            fit = np.clip(np.nan_to_num(fit), -_MAX_COEFFICIENT, _MAX_COEFFICIENT)
            coefficients.append(fit.astype(np.float32))  # as the decoder will read them
            guess = _combine(features, coefficients[-1])
        q[c] = np.round((residual[c] - guess) / step)
        decoded.append(guess + q[c] * step)
    scales = _tile_scales(q)
    chunks = laplace.encode(q.reshape(-1), lambda part: _indexes(scales, q.shape, part), 2**shift, "archive layer")
    fits = np.concatenate(coefficients).astype(">f4").tobytes()
    return laplace.pack_scales(scales) + fits + chunks


@dataclasses.dataclass(frozen=True)
class Layer:
    """An archive layer whose every length and field has been checked (`parse`), not yet decoded."""

    shape: tuple[int, int, int]  # (4, h, w) planes
    scales: np.ndarray  # (4, th, tw) table index per tile
    coefficients: np.ndarray  # the plane predictors, float32, in ORDER
    chunks: list[bytes]  # one rANS stream per laplace.chunks() slice


def parse(stream: bytes, coded_size: tuple[int, int], name: str = "input") -> Layer:
    """Check an archive layer's structure before anything costly is done for it: tile scales,
    predictors, and the length of every rANS chunk; one BitstreamError for anything wrong."""
    shape = plane_shape(coded_size)
    grid = (4, -(-shape[1] // TILE), -(-shape[2] // TILE))

    def damaged(why: str) -> BitstreamError:
        return BitstreamError(f"{name}: damaged .rbit file (archive layer: {why})")

    scales, at = laplace.unpack_scales(stream, int(np.prod(grid)), 4 * _N_COEFFICIENTS, damaged)
    if scales.max() >= len(laplace.SCALES):
        raise damaged("tile scales")
    fits = np.frombuffer(stream[at : at + 4 * _N_COEFFICIENTS], dtype=">f4").astype(np.float32)
    at += 4 * _N_COEFFICIENTS
    if not np.isfinite(fits).all() or np.abs(fits).max(initial=0) > _MAX_COEFFICIENT:
        raise damaged("plane predictors")
    chunks = laplace.split(stream, at, int(np.prod(shape)), damaged)
    return Layer(shape, scales.reshape(grid), fits, chunks)


def decode(layer: Layer, photo: torch.Tensor, cam_to_srgb: torch.Tensor, shift: int, name: str = "input") -> torch.Tensor:
    """(4, h, w) white-balanced planes, float64 in [0, 1], from a parsed archive layer and the
    learned photo; a chunk the encoder cannot have written is one BitstreamError."""
    shape = layer.shape
    def damaged(why: str) -> BitstreamError:
        return BitstreamError(f"{name}: damaged .rbit stream (archive layer, {why})")

    n = int(np.prod(shape))
    q = laplace.decode(layer.chunks, n, lambda part: _indexes(layer.scales, shape, part), 2**shift, damaged)
    q = q.reshape(shape)
    residual = np.zeros(shape)
    decoded: list[np.ndarray] = []
    fits = layer.coefficients
    for c in ORDER:
        features = _features(decoded)
        guess = 0.0
        if features is not None:
            k = len(features)
            guess, fits = _combine(features, fits[:k]), fits[k:]
        residual[c] = guess + q[c] * 2.0**-shift
        decoded.append(residual[c])
    on_curve = (_prediction(photo, cam_to_srgb, shape) + torch.from_numpy(residual)).clamp(0.0, 1.0)
    return isp.gamma_curve_inverse(on_curve)


def _features(decoded: list[np.ndarray]) -> np.ndarray | None:
    """What a plane's residual is predicted from: each plane decoded before it, and its 3x3 mean."""
    if not decoded:
        return None
    return np.stack([f for d in decoded for f in (d, _box3(d))])


def _combine(features: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    out = np.zeros(features.shape[1:])
    for f, a in zip(features, coefficients.astype(np.float64)):
        out += a * f  # one fixed order of additions: encoder and decoder compute the same guess
    return out


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean, edges replicated."""
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _tile_scales(q: np.ndarray) -> np.ndarray:
    """(4, th, tw) uint8: per tile, the table scale nearest (in log) to the mean |residual|, the
    maximum-likelihood scale of a Laplacian."""
    c, h, w = q.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    a = np.zeros((c, th * TILE, tw * TILE), dtype=np.float64)
    a[:, :h, :w] = np.abs(q)
    sums = a.reshape(c, th, TILE, tw, TILE).sum(axis=(2, 4))
    counts = np.zeros((th * TILE, tw * TILE))
    counts[:h, :w] = 1
    counts = counts.reshape(th, TILE, tw, TILE).sum(axis=(1, 3))
    mean = np.maximum(sums / counts, laplace.SCALES[0])
    nearest = np.abs(np.log(mean)[..., None] - np.log(laplace.SCALES)).argmin(axis=-1)
    return nearest.astype(np.uint8)


def _indexes(scales: np.ndarray, shape: tuple[int, ...], part: slice | None = None) -> np.ndarray:
    """The table index of each symbol (plane-major, row-major; those of `part` only), from its
    tile's scale."""
    _, h, w = shape
    part = part or slice(0, 4 * h * w)
    flat = np.arange(part.start, part.stop, dtype=np.int64)  # this chunk's positions only
    plane, rest = np.divmod(flat, h * w)
    row, col = np.divmod(rest, w)
    return scales[plane, row // TILE, col // TILE].astype(np.int32)
