"""The detail layer: the reference rendering's residual against the learned photo, transform-coded
in sRGB (`--quality 7..12` of the shipped models, and 4..5 where it pays; rawbit/ladder.py).

The learned decoder's photo stops improving near what its training taught it (~33 dB on the Nikon
D1 at rate point 11, 1.2 bpp), while JPEG reaches 35 dB there. Above its default rate point the
encoder therefore sends what the photo still lacks, coded the classical way:

    reference rendering, sRGB (H, W, 3) - learned photo at its rate point (before 8-bit rounding)
        -> orthonormal colour transform (luma, two chroma differences)
        -> 16x16 orthonormal DCT -> rate-distortion quantiser, step from the setting (8-bit units)
        -> rANS, one discretised Laplacian per 64x64-pixel tile, band group and channel

and the decoder adds the decoded residual to the photo it synthesises, then applies the file's
loop filter when it has one (format 7: the correction filter's fit on the rebuilt photo, +0.1 to
+0.3 dB on the real test cameras; rawbit/codec.py, _with_loop). The transforms are
orthonormal, so the quantisation error is the error of the photo: the step sets the PSNR.

Why this shape (measured on the real test cameras, cameras no model trained on; docs/bench.md):
- In sRGB, not on the sensor planes as the archive layer: the PSNR that matters is the rendered
  photo's, and the Kodak DC50's colour matrix magnifies a plane's error threefold.
- A transform, not each value on its own: at these steps per-value coding (the archive layer at
  1/32 on the curve) stayed below JPEG on the DC50 (33.8-34.9 dB at 1.7-2.0 bpp, JPEG 36.3 at 1.7).
- Over rate point 6 or 4, whichever the photo codes best on (the encoder tries both on the
  correction filter's patches, codec._best_way): which base pays depends on how well the model
  knows the camera. At step 64, over point 6 / over point 4: Kodak DC50 32.87 dB at 0.435 bpp /
  32.46 at 0.339; Nikon D1 32.40 at 0.417 / 32.06 at 0.364; Blackmagic 38.68 at 0.085 / 38.32
  at 0.082. A higher base pays bits the residual would have paid anyway; a lower one loses on
  clean frames the model renders well (the Blackmagic).
- Below the default point, at qualities 4 and 5 (BELOW), a coarse layer over a lower point beats
  the point itself on cameras the model renders poorly: the DC50 29.75 dB at 0.167 bpp (step 128
  over point 3) where point 4 and 5 give 28.84 at 0.155 and 30.12 at 0.228; the encoder keeps
  the learned point where it does better (the Blackmagic).
- Dead zone 0.38 and reconstruction 0.05 step towards zero: +0.3-0.4 dB at equal rate over plain
  rounding (Laplacian coefficients are denser near zero).
- Rate-distortion quantisation (since stop 28; the encoder's choice, the format is unchanged):
  each value the nearest level, the one below or zero, whichever costs least in squared error
  plus 0.1 step² a bit under its cell's scale, and a cell zeroed where that is cheaper; two
  passes. Against the dead zone alone, over the six detail steps (whole photos, bits of the
  learned layer included): BD-rate -3.8 % (Nikon D1 over point 6), -4.6 % (over point 4), -4.1 %
  and -5.0 % (Kodak DC50). 0.06 and 0.15 step² a bit gave -2.5 and -2.7 % on the Nikon (point 6),
  0.08 and 0.12 within 0.3 % of 0.1; one pass -3.75 %, three -3.84 %. The real test split's
  mean curve against WebP: +0.69 -> -3.59 % (docs/bench.md, stop 28).
- 16x16 blocks and 64-pixel tiles: -6 % (Nikon D1), -8 % (DC50), -17 % (Blackmagic) BD-rate
  against 8x8 blocks and 128-pixel tiles (the residual is smooth where the learned photo is right;
  smaller tiles follow where it is not). 32x32 blocks, 32-pixel tiles, finer band groups, a
  coarser chroma step or per-coefficient contexts from the bands decoded before (an upper bound of
  -2.5 to -5 %, before their side information) did not pay.
- Lower bases (since stop 25): point 3 beside 4 under the detail settings, and point 1 at
  quality 4, point 2 at quality 5. The DC50 took them at qualities 4, 5 and 7-10 (at 4, 5, 7:
  -10.6, -6, -6 % bpp for -0.11, -0.09, -0.04 dB; its BD-rate against WebP over qualities 3-14
  -5.95 -> -8.38 %), the Nikon D1 at quality 5 only (-3 % bpp, -0.10 dB). Each costs the encoder
  one more trial at those qualities, never the default's path.
- At the default (quality 6) only at the `best` effort (BELOW_BEST; `rawbit encode --effort best`,
  since stop 26): a layer of step 90 over point 3 codes the DC50 in 0.234 bpp at 31.36 dB (point
  6: 0.322, 31.19) and the Nikon D1 in 0.247 at 30.81 (0.272, 30.67), the Blackmagic keeps point
  6: the mean curve's BD-rate against WebP goes from +3.15 to +0.20 % (docs/bench.md, stop 26;
  with stop 27's tone filter, +0.69 to -2.16 %; with stop 28's rate-distortion quantiser the
  default effort reaches -3.59 %, `best` was not re-measured).
  But the trial and the layer make a 12 MP encode 65.9 s instead of 13.4 s (benchmarks/speed.py,
  2 threads, the synthetic photo takes the layer), its decode 27.7 s instead of 21.1, against the
  default's targets of 6 s and 8 s. Over point 4 or 3 as the detail settings: points 5 and 2,
  tried too, never scored best (qualities 6-9 on the Nikon D1 and the DC50, 6-7 on the
  Blackmagic; stop 26). At quality 3, a layer of step 255 over point 1 codes the DC50 in 0.080 bpp
  at 27.23 dB (point 3: 0.102, 27.61; the Nikon and the Blackmagic keep point 3), but the mean
  curve's BD-rate against WebP went +0.20 -> +0.22 % (BD-PSNR +0.197 -> +0.214 dB): not taken.
- Deblocking the residual across its 16-pixel block edges (a fixed H.264-like edge filter) lifts
  the photo +0.15-0.25 dB at steps 32-180, but only +0.08-0.10 dB once the loop filter is fitted
  after it: the loop filter already takes most of what it would.
- Scales sent per tile, band group and channel (a zlib'd byte each; a cell of zeros is one byte
  and no symbols), chosen by exact code length: the probabilities never depend on the decoder's
  float synthesis, so the stream decodes identically on any machine; the synthesis moves only the
  pixels it is added to.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.fft import dctn, idctn

from . import laplace
from .errors import BitstreamError

# Settings above the base rate point, coarsest first: the quantiser step on the 8-bit scale.
STEPS = (64, 45, 32, 22, 16, 11)
BASE = 6  # the shipped models' default rate point: the learned points end there, the layers begin
# Other learned points a detail layer above BASE may go over; the encoder tries each on the photo.
OTHER_BASES = (4, 3)
# Qualities up to BASE that may be a coarse layer over a lower learned point instead of their own:
# quality -> (step, the lower points); the encoder tries each, and the learned point alone. The
# steps go on from STEPS' ratio of about 1/sqrt(2) per quality (90, 128 and 180 above its 64).
# BASE, the default, has alternatives only at the `best` effort (ladder.EFFORTS): they make its
# 12 MP encode ~5x slower (the module's note).
BELOW = {4: (180, (3, 2, 1)), 5: (128, (4, 3, 2))}
BELOW_BEST = {**BELOW, BASE: (90, OTHER_BASES)}
# Bumped whenever what the layer codes or which quality is which changes (benchmark caches key on it).
CODING = 9
BLOCK = 16
TILE = 4  # blocks a side per tile of scales (64 pixels)
LIMIT = 127  # coefficient values of the tables; larger ones go through compressai's escape
ZERO = 255  # a cell's scale byte when all of its coefficients are 0: none of them is coded
_DEAD_ZONE = 0.38  # |c| / step + this, floored (0.5 would be rounding)
_SHRINK = 0.05  # non-zero values are rebuilt this many steps nearer zero
# Rate-distortion quantisation (_quantise): a bit is worth this many step² of squared error, over
# this many passes (measured: stop 28's note in the module's docstring).
_RD_LAMBDA = 0.1
_RD_PASSES = 2
# Luma, then two orthogonal chroma differences: orthonormal, so errors keep their size.
_COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
_COLOUR /= np.linalg.norm(_COLOUR, axis=1, keepdims=True)
# Bands grouped by pairs of diagonals ((u + v) // 2), the highest ones together: 9 groups of one
# scale each.
_GROUP = np.minimum(np.add.outer(np.arange(BLOCK), np.arange(BLOCK)).reshape(-1) // 2, 8)
_N_GROUPS = int(_GROUP.max()) + 1
_BAND_ORDER = np.argsort(_GROUP, kind="stable")  # the bands of one group next to each other
_BAND_INVERSE = np.argsort(_BAND_ORDER)  # where each band, in natural order, sits in group order
_BAND_GROUP = _GROUP[_BAND_ORDER]  # each band's group, bands in that order
_GROUP_SIZE = np.bincount(_GROUP)  # bands per group
_GROUP_BANDS = [slice(int(e - n), int(e)) for e, n in zip(np.cumsum(_GROUP_SIZE), _GROUP_SIZE)]


def grid(size: tuple[int, int]) -> tuple[int, int]:
    """Tiles down and across for an (H, W) photo."""
    side = BLOCK * TILE
    return -(-size[0] // side), -(-size[1] // side)


def encode(residual: np.ndarray, step: int) -> tuple[bytes, np.ndarray]:
    """(the detail stream of an (H, W, 3) residual on the 8-bit scale (reference - learned photo),
    the residual as the decoder will rebuild it from that stream), the latter from the quantised
    values themselves: `decode`'s arithmetic, without decoding the stream."""
    q = _quantise(_coefficients(residual), step)  # (3, tiles, bands in group order, blocks)
    magnitudes = np.abs(q)
    scales = np.empty((3, q.shape[1], _N_GROUPS), dtype=np.uint8)
    for g, bands in enumerate(_GROUP_BANDS):
        cell = magnitudes[:, :, bands, :].reshape(-1, (bands.stop - bands.start) * q.shape[3])
        best = laplace.best_scales(cell, LIMIT)
        best[cell.max(axis=1) == 0] = ZERO
        scales[:, :, g] = best.reshape(3, q.shape[1])
    indexes = _symbol_scales(scales, q.shape)
    coded = indexes != ZERO
    symbols, indexes = q[coded].astype(np.int64), indexes[coded].astype(np.int32)
    chunks = laplace.encode(symbols, lambda part: indexes[part], LIMIT, "detail layer")
    # The cells left uncoded hold only zeros: all of q dequantised is what the decoder rebuilds.
    return laplace.pack_scales(scales) + chunks, _pixels(_dequantise(q, step), residual.shape[:2])


@dataclasses.dataclass(frozen=True)
class Layer:
    """A detail layer whose every length and field has been checked (`parse`), not yet decoded."""

    size: tuple[int, int]  # (H, W) of the photo, oriented
    scales: np.ndarray  # (3, tiles, groups) table index, ZERO for a cell of zeros
    chunks: list[bytes]


def parse(stream: bytes, size: tuple[int, int], name: str = "input") -> Layer:
    """Check a detail layer's structure before anything costly is done for it; one BitstreamError
    for anything wrong."""

    def damaged(why: str) -> BitstreamError:
        return BitstreamError(f"{name}: damaged .rbit file (detail layer: {why})")

    th, tw = grid(size)
    shape = (3, th * tw, _N_GROUPS)
    scales, at = laplace.unpack_scales(stream, int(np.prod(shape)), 0, damaged)
    if ((scales >= len(laplace.SCALES)) & (scales != ZERO)).any():
        raise damaged("tile scales")
    scales = scales.reshape(shape)
    n_symbols = int(((scales != ZERO) * _GROUP_SIZE).sum()) * TILE * TILE  # a cell: its bands in each block
    chunks = laplace.split(stream, at, n_symbols, damaged)
    return Layer(size, scales, chunks)


def decode(layer: Layer, step: int, name: str = "input") -> np.ndarray:
    """(H, W, 3) residual on the 8-bit scale from a parsed layer."""

    def damaged(why: str) -> BitstreamError:
        return BitstreamError(f"{name}: damaged .rbit stream (detail layer, {why})")

    th, tw = grid(layer.size)
    shape = (3, th * tw, BLOCK * BLOCK, TILE * TILE)
    indexes = _symbol_scales(layer.scales, shape)
    coded = indexes != ZERO
    table = indexes[coded].astype(np.int32)
    symbols = laplace.decode(layer.chunks, table.size, lambda part: table[part], LIMIT, damaged)
    values = np.zeros(shape, dtype=np.float32)
    values[coded] = _dequantise(symbols, step)  # the coded symbols alone: most cells are zeros
    return _pixels(values, layer.size)


def _coefficients(residual: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (3, tiles, bands, blocks a tile) DCT coefficients, bands in group order. The photo
    is padded by repeating its edge to whole tiles: a flat continuation costs next to nothing."""
    h, w, _ = residual.shape
    th, tw = grid((h, w))
    side = BLOCK * TILE
    x = np.pad(residual.astype(np.float64), ((0, th * side - h), (0, tw * side - w), (0, 0)), mode="edge")
    x = (x @ _COLOUR.T).transpose(2, 0, 1)  # (3, Hp, Wp)
    blocks = x.reshape(3, th, TILE, BLOCK, tw, TILE, BLOCK).transpose(0, 1, 4, 3, 6, 2, 5)
    c = dctn(blocks, axes=(3, 4), norm="ortho")  # (3, th, tw, BLOCK, BLOCK, TILE, TILE)
    c = c.reshape(3, th * tw, BLOCK * BLOCK, TILE * TILE)
    return c[:, :, _BAND_ORDER, :]


def _pixels(c: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """_coefficients inverted: (3, tiles, bands in group order, blocks) float32 -> (H, W, 3)
    float32. In float32 (errors ~1e-5 of a level, far below the rounding to 8 bits that follows),
    the colour transform taken on the coefficients (it commutes with the DCT: a (3, 3) matrix
    product over the channels) and the blocks laid out in one copy: float64 and three transposes
    took twice the time and memory."""
    h, w = size
    th, tw = grid(size)
    rgb = (_COLOUR.T.astype(np.float32) @ c.reshape(3, -1)).reshape(c.shape)
    blocks = rgb[:, :, _BAND_INVERSE, :].reshape(3, th, tw, BLOCK, BLOCK, TILE, TILE)
    x = idctn(blocks, axes=(3, 4), norm="ortho", overwrite_x=True)  # (3, th, tw, u, v, bi, bj)
    out = np.empty((th * TILE * BLOCK, tw * TILE * BLOCK, 3), dtype=np.float32)
    out.reshape(th, TILE, BLOCK, tw, TILE, BLOCK, 3)[...] = x.transpose(1, 5, 3, 2, 6, 4, 0)
    return out[:h, :w]


def _dequantise(q: np.ndarray, step: int) -> np.ndarray:
    """Quantised values (integers) -> float32 coefficients, the non-zero ones _SHRINK steps nearer
    zero. Elementwise: the encoder's whole array and the decoder's coded symbols get the same."""
    q = q.astype(np.float32)
    return (q - np.sign(q) * np.float32(_SHRINK)) * np.float32(step)


def _quantise(c: np.ndarray, step: int) -> np.ndarray:
    """(3, tiles, bands in group order, blocks) coefficients -> quantised values (int32), chosen for
    their squared error plus _RD_LAMBDA step² per bit they cost (rate-distortion quantisation; the
    decoder does not know or care how the values were chosen).

    Start from the dead-zone quantiser; then, _RD_PASSES times, with each cell's scale taken as the
    one that codes its current values best: each value becomes whichever of its nearest level, the
    level below and zero costs least, and a cell whose values cost more than leaving it all zeros
    (its error then, no symbols) is zeroed. Where a cell's values are sparse their bits are dear
    and a 1 goes to 0; where they are dense a value keeps its nearest level."""
    u = np.abs(c) / step  # in steps: the error's price is then the same at every step
    q = np.floor(u + _DEAD_ZONE).astype(np.int32)
    nearest = np.floor(u + 0.5).astype(np.int32)
    lengths = laplace.code_lengths(LIMIT)
    for _ in range(_RD_PASSES):
        for bands in _GROUP_BANDS:
            q[:, :, bands, :] = _rd_cells(u[:, :, bands, :], q[:, :, bands, :], nearest[:, :, bands, :], lengths)
    return (np.sign(c) * q).astype(np.int32)


def _rd_cells(u: np.ndarray, q: np.ndarray, nearest: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One rate-distortion pass over one band group's cells (`_quantise`), all (3, tiles, bands,
    blocks): |coefficients| in steps, the current values, the nearest levels."""
    shape = u.shape
    cells = shape[0] * shape[1]
    out = np.zeros((cells, u[0, 0].size), dtype=q.dtype)
    live = np.flatnonzero(nearest.reshape(cells, -1).any(axis=1))  # a cell of zeros stays one
    u, q, nearest = (a.reshape(cells, -1)[live] for a in (u, q, nearest))
    scale = laplace.best_scales(q, LIMIT)
    zero_bits = lengths[0, scale]  # a 0's bits in each cell
    energy = (u * u).sum(axis=1)  # each cell's error with all of it zero
    rows, cols = np.nonzero(nearest)
    v, top = u[rows, cols], nearest[rows, cols]
    best = np.zeros_like(top)
    as_zero = v * v + _RD_LAMBDA * zero_bits[rows]
    best_cost = as_zero
    for level in (top - 1, top):
        cost = (v - (level - _SHRINK)) ** 2 + _RD_LAMBDA * lengths[np.minimum(level, LIMIT), scale[rows]]
        take = (level > 0) & (cost < best_cost)
        best, best_cost = np.where(take, level, best), np.where(take, cost, best_cost)
    # every position's cost as a 0, then what the non-zero choices change
    coded = energy + _RD_LAMBDA * zero_bits * u.shape[1]
    coded += np.bincount(rows, best_cost - as_zero, minlength=len(u))
    chosen = np.zeros_like(q)
    chosen[rows, cols] = best
    chosen[energy <= coded] = 0  # cheaper as a cell of zeros, which costs no symbols at all
    out[live] = chosen
    return out.reshape(shape)


def _symbol_scales(scales: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The scale of every coefficient of a (3, tiles, bands, blocks) array, from its cell's."""
    return np.broadcast_to(scales[:, :, _BAND_GROUP, None], shape)
