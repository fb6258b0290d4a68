"""Discretised Laplacians for the layers above the learned one (archive, detail): the rANS tables,
one per scale, and the chunked streams of symbols coded with them.

A layer sends, for each group of symbols, the index of the scale that codes it; the symbols'
probabilities then never depend on a float computation of the decoder, so a stream decodes
identically on any machine."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable

import numpy as np

from .errors import BitstreamError, RawbitError
from .rans import StreamError, check_stream, rans_decode, rans_encode

SCALES = np.geomspace(0.04, 512.0, 64)  # Laplace scales of the tables, in quantisation steps
PRECISION = 16  # compressai's rANS
CHUNK = 2**20  # at most this many symbols per rANS stream: the coder takes Python lists, ~70 B a symbol


@functools.lru_cache(maxsize=None)
def tables(limit: int) -> tuple[list[list[int]], list[int], list[int]]:
    """One quantised CDF per scale over the values -limit..limit, plus compressai's escape symbol,
    which codes the rare value beyond them."""
    from compressai._CXX import pmf_to_quantized_cdf

    k = np.arange(-limit, limit + 1, dtype=np.float64)
    cdfs = []
    for b in SCALES:
        pmf = _laplace_cdf(k + 0.5, b) - _laplace_cdf(k - 0.5, b)
        pmf = np.append(pmf / pmf.sum(), 0.0)  # escape: pmf_to_quantized_cdf still gives it 1/2**16
        cdfs.append(pmf_to_quantized_cdf(pmf.tolist(), PRECISION))
    size = len(cdfs[0])
    return cdfs, [size] * len(SCALES), [-limit] * len(SCALES)


@functools.lru_cache(maxsize=None)
def code_lengths(limit: int) -> np.ndarray:
    """(limit + 1, len(SCALES)) bits of a value of magnitude 0..limit under each table (its sign
    included), from the quantised CDFs: what choosing a scale by cost minimises."""
    cdfs, _, _ = tables(limit)
    out = np.empty((limit + 1, len(SCALES)))
    for j, cdf in enumerate(cdfs):
        p = np.diff(np.asarray(cdf[: 2 * limit + 2], dtype=np.float64)) / 2.0**PRECISION
        out[:, j] = -np.log2(p[limit:])  # p[limit] is the value 0
    return out


def best_scales(magnitudes: np.ndarray, limit: int) -> np.ndarray:
    """(cells, n) non-negative ints -> (cells,) uint8: the scale coding each cell in fewest bits."""
    capped = np.minimum(magnitudes, limit).astype(np.int64)
    offsets = np.arange(len(capped))[:, None] * (limit + 1)
    hist = np.bincount((capped + offsets).reshape(-1), minlength=len(capped) * (limit + 1))
    cost = hist.reshape(len(capped), limit + 1) @ code_lengths(limit)
    return cost.argmin(axis=1).astype(np.uint8)


def pack_scales(scales: np.ndarray) -> bytes:
    """A layer's scale bytes as it stores them: a u32 length, then the bytes zlib-compressed."""
    packed = zlib.compress(np.ascontiguousarray(scales, dtype=np.uint8).tobytes(), 9)
    return struct.pack(">I", len(packed)) + packed


def unpack_scales(
    stream: bytes, count: int, extra: int, damaged: Callable[[str], BitstreamError]
) -> tuple[np.ndarray, int]:  # fmt: skip
    """`pack_scales` read back: exactly `count` bytes, and where the layer goes on; `extra` bytes
    must follow them (the layer's own fields) before its chunks."""
    if len(stream) < 4:
        raise damaged(f"{len(stream)} bytes")
    (n,) = struct.unpack(">I", stream[:4])
    if 4 + n + extra > len(stream):
        raise damaged("its tile scales run past its end")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(stream[4 : 4 + n], count + 1)
    except zlib.error as e:
        raise damaged(f"tile scales: {e}") from e
    scales = np.frombuffer(raw, dtype=np.uint8)
    if scales.size != count or not d.eof or d.unused_data:
        raise damaged("tile scales")
    return scales, 4 + n


def chunks(n: int) -> list[slice]:
    """The symbols of each rANS stream: ceil(n / CHUNK) near-equal runs, so that no stream is a
    short tail (compressai's encoder needs room for its state: a few symbols alone may not fit).
    None for no symbols (a detail layer whose every value is 0): an empty stream has no room for
    the coder's state at all."""
    m = -(-n // CHUNK)
    return [slice(k * n // m, (k + 1) * n // m) for k in range(m)]


def coder():
    from compressai.entropy_models.entropy_models import _EntropyCoder

    return _EntropyCoder("ans")


def encode(symbols: np.ndarray, indexes: Callable[[slice], np.ndarray], limit: int, what: str) -> bytes:
    """Length-prefixed rANS chunks of `symbols` (flat ints); `indexes(part)` gives the table of
    each symbol of a chunk."""
    cdfs, sizes, offsets = tables(limit)
    rans = coder()
    out = []
    try:
        for part in chunks(symbols.size):
            chunk = rans_encode(rans, symbols[part], indexes(part), cdfs, sizes, offsets)
            out.append(struct.pack(">I", len(chunk)) + chunk)
    except StreamError as e:
        raise RawbitError(f"cannot code the {what} ({e})") from e
    return b"".join(out)


def split(stream: bytes, at: int, n: int, damaged: Callable[[str], BitstreamError]) -> list[bytes]:
    """The chunks of n symbols that fill `stream` from `at` to its end, every length checked."""
    out = []
    for part in chunks(n):
        if at + 4 > len(stream):
            raise damaged("it ends before its last chunk")
        (length,) = struct.unpack(">I", stream[at : at + 4])
        chunk, at = stream[at + 4 : at + 4 + length], at + 4 + length
        try:
            check_stream(chunk, part.stop - part.start)
        except StreamError as e:
            raise damaged(f"chunk {len(out) + 1}: {e}") from e
        out.append(chunk)
    if at != len(stream):
        raise damaged(f"{len(stream) - at} bytes after its last chunk")
    return out


def decode(
    parts: list[bytes], n: int, indexes: Callable[[slice], np.ndarray], limit: int, damaged: Callable[[str], BitstreamError]
) -> np.ndarray:  # fmt: skip
    """The n symbols (float64) of chunks `split` checked."""
    cdfs, sizes, offsets = tables(limit)
    rans = coder()
    out = np.empty(n, dtype=np.float64)
    for i, (part, chunk) in enumerate(zip(chunks(n), parts)):
        try:
            out[part] = rans_decode(rans, chunk, indexes(part), cdfs, sizes, offsets)
        except StreamError as e:
            raise damaged(f"chunk {i + 1}: {e}") from e
    return out


def _laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    tail = 0.5 * np.exp(-np.abs(x) / b)
    return np.where(x < 0, tail, 1.0 - tail)
