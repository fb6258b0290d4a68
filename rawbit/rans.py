"""The guard around compressai's rANS coder: every stream rawbit decodes goes through it.

compressai's rANS decoder (cpp_exts/rans/rans_interface.cpp, Rans64 from ryg_rans) trusts its
input: Rans64DecInit reads two 32-bit words, every symbol's renormalisation may read one more, and a
symbol in "bypass" mode reads one 4-bit group after another while they read 15, then that many groups
again, with no check against the stream's end anywhere. An empty, short or re-split stream made it
read past its buffer (SIGSEGV where the buffer ended a mapping). Hence, before it runs:
  - a stream is whole 32-bit words, at least the 2 that initialisation reads, and no longer than the
    encoder can write for its symbols (its output buffer is one word per symbol);
  - it decodes a copy padded with zero words: 2 per symbol, 2 per 4-bit group of ones in the stream,
    and 64 more. Past the end, zeros drain the decoder's state: a renormalisation reads one word, a
    bypass run stops within the state's 64 bits and then reads its 15x-longer tail, which only groups
    of ones in the stream itself can lengthen (measured: at most 2 + n + 2 * groups words in total,
    over random, truncated, all-ones and hill-climbed streams; the padding doubles the per-symbol
    share);
and after it: the decoded symbols, encoded again, must give back the very stream (rANS is a bijection
between a symbol sequence and the encoder's output), which both proves that the decoder read exactly
the encoder's bytes and refuses any stream that a decoder would have read past. The encoder too
trusts its input: its output buffer holds one word per symbol, and a value whose bypass code
reaches 2**28 sends it into an endless loop; symbols it could not code are refused first.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np
import torch

from .errors import RawbitError


class StreamError(ValueError):
    """An entropy-coded stream that the encoder cannot have written (caught before or after decoding)."""


_MIN_STREAM = 8  # bytes: the two 32-bit words Rans64DecInit reads


def check_stream(stream: bytes, n_symbols: int) -> None:
    """The length checks made before compressai's decoder may read `stream`."""
    n = len(stream)
    if n < _MIN_STREAM:
        raise StreamError(f"a {n}-byte stream; the shortest holds {_MIN_STREAM}")
    if n % 4:
        raise StreamError(f"a {n}-byte stream; streams are whole 32-bit words")
    if n > 4 * max(n_symbols, 2):
        raise StreamError(f"a {n}-byte stream for {n_symbols} symbols; at most 4 bytes a symbol")


def _padding(stream: bytes, n_symbols: int) -> int:
    b = np.frombuffer(stream, dtype=np.uint8)
    ones = int(np.count_nonzero((b & 15) == 15) + np.count_nonzero((b >> 4) == 15))
    return 4 * (2 * n_symbols + 2 * ones + 64)


def _ints(x) -> np.ndarray:
    return x.astype(np.int64, copy=False) if isinstance(x, np.ndarray) else np.fromiter(x, dtype=np.int64, count=len(x))


def _as_list(x) -> list[int]:
    """What the guard hands compressai's coder: callers with large arrays (the archive layer, the
    probability path) pass numpy, which the guard's own arithmetic reads without a list; the coder
    gets one list, built once (its pybind arguments take arrays too, converted element by element)."""
    return x.tolist() if isinstance(x, np.ndarray) else x


def _encoded_bits_bound(values, indexes, cdfs, cdf_sizes, offsets) -> float | None:
    """The bits compressai's encoder spends on these symbols (an upper bound, to a bit a word): each
    symbol's information, log2(2**16 / frequency) in its table, plus the 4-bit groups of the values
    out of the table's range (bypass mode). None where a value is one the encoder cannot code at
    all: its loop over the 4-bit groups of a bypass value shifts a 32-bit int by 4 bits a group,
    which ends only below 2**28 (past that, and for the negative numbers an overflow makes, never)."""
    n = len(indexes)
    table = np.asarray(cdfs, dtype=np.int64)
    # each table entry's information, once: a 12 MP latent is millions of symbols over a few tables
    information = 16.0 - np.log2(np.maximum(np.diff(table, axis=1), 1))
    idx = _ints(indexes)
    val = _ints(values) - np.asarray(offsets, dtype=np.int64)[idx]
    max_value = np.asarray(cdf_sizes, dtype=np.int64)[idx] - 2
    bypass = (val < 0) | (val >= max_value)
    coded = np.where(bypass, max_value, val)  # the symbol the table codes: the escape for a bypass
    # (+ 1e-4 a symbol: rANS rounds each step up by less than log2(1 + 2**-15) bits)
    bits = float(np.sum(information[idx, coded])) + 1e-4 * n
    if not bypass.any():
        return bits
    val, max_value = val[bypass], max_value[bypass]
    raw = np.where(val < 0, -2 * val - 1, 2 * (val - max_value))
    if raw.max() >= 2**28:
        return None
    groups = np.zeros(raw.shape, dtype=np.int64)
    for k in range(7):
        groups += (raw >> (4 * k)) != 0
    return bits + float((4 * (groups + groups // 15 + 1)).sum())


def _fits(bits: float | None, n_symbols: int) -> bool:
    """Whether the encoder's output, bits/32 words plus 3 (the state's start and its 2-word flush)
    and a word of rounding, fits the one word per symbol compressai allocates for it."""
    return bits is not None and math.ceil(bits / 32) + 4 <= n_symbols


def rans_decode(coder, stream: bytes, indexes, cdfs, cdf_sizes, offsets) -> np.ndarray:
    """compressai's decode_with_indexes, guarded (see above): the values (int64); raises StreamError
    for a bad stream. `indexes`: a list or an integer array."""
    n = len(indexes)
    check_stream(stream, n)
    listed = _as_list(indexes)
    values = coder._decoder.decode_with_indexes(stream + bytes(_padding(stream, n)), listed, cdfs, cdf_sizes, offsets)
    array = _ints(values)
    if not _fits(_encoded_bits_bound(array, indexes, cdfs, cdf_sizes, offsets), n):
        raise StreamError("it decodes to values that no encoder wrote")  # nor could write
    if coder._encoder.encode_with_indexes(values, listed, cdfs, cdf_sizes, offsets) != stream:
        raise StreamError("it was not consumed exactly as the encoder wrote it")
    return array


def rans_encode(coder, symbols, indexes, cdfs, cdf_sizes, offsets) -> bytes:
    """compressai's encode_with_indexes, for symbols it can code (see above), else StreamError.
    `symbols`, `indexes`: lists or integer arrays."""
    if not _fits(_encoded_bits_bound(symbols, indexes, cdfs, cdf_sizes, offsets), len(indexes)):
        raise StreamError("values out of the entropy coder's range")
    return coder._encoder.encode_with_indexes(_as_list(symbols), _as_list(indexes), cdfs, cdf_sizes, offsets)


class _GuardedCoder:
    """Stands in for an entropy model's compressai _EntropyCoder while a file is coded; its errors
    say which stream (`labels`, one per decode call, in the order the latent codec decodes)."""

    def __init__(self, coder, labels: tuple[str, ...]):
        self._coder = coder
        self.name = coder.name
        self._labels = list(labels)

    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_sizes, offsets):
        return rans_encode(self._coder, symbols, indexes, cdfs, cdf_sizes, offsets)

    def decode_with_indexes(self, stream, indexes, cdfs, cdf_sizes, offsets):
        label = self._labels.pop(0) if len(self._labels) > 1 else self._labels[0]
        try:
            return rans_decode(self._coder, stream, indexes, cdfs, cdf_sizes, offsets)
        except StreamError as e:
            raise StreamError(f"{label}: {e}") from e


@contextlib.contextmanager
def guarded_rans(model: torch.nn.Module) -> Iterator[None]:
    """Every entropy model of `model` codes through `rans_encode` / `rans_decode` inside the block."""
    from compressai.entropy_models import EntropyBottleneck, EntropyModel

    swapped = []
    for m in model.modules():
        if isinstance(m, EntropyModel) and not isinstance(m.entropy_coder, _GuardedCoder):
            if m.entropy_coder.name != "ans":
                raise RawbitError(f"entropy coder {m.entropy_coder.name!r} is not supported")
            labels = ("hyperprior stream",) if isinstance(m, EntropyBottleneck) else (
                "latent stream, anchors", "latent stream, non-anchors")  # fmt: skip
            swapped.append((m, m.entropy_coder))
            m.entropy_coder = _GuardedCoder(m.entropy_coder, labels)
    try:
        yield
    finally:
        for m, coder in swapped:
            m.entropy_coder = coder
