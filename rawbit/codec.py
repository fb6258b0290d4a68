"""Encode and decode pipelines: packed RAW -> network -> streams -> container, and back."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from . import bitstream
from .bitstream import DEFAULT_MAX_PIXELS, RbitFile
from .device import one_thread_per_op
from .errors import BitstreamError, ModelError, RawbitError
from .nets import RBN
from .nets.probability import float32_path_in_bands
from .nets.rbn import LatentStreams
from .raw import RawImage, crop_to_photo, orient


@contextlib.contextmanager
def _transforms_on(model: RBN, device: torch.device) -> Iterator[None]:
    """Run the big transforms on `device`; the probability path (hyperprior, context, entropy
    parameters, gains) stays on the CPU so a file decodes identically whatever device made it.

    The transforms run channels-last (NHWC), which oneDNN's CPU convolutions take ~1.5x faster;
    inputs are converted with `channels_last`. Restored afterwards: exported weights must be
    contiguous."""
    model.g_a.to(device, memory_format=torch.channels_last)
    model.g_s.to(device, memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.g_a.to("cpu", memory_format=torch.contiguous_format)
        model.g_s.to("cpu", memory_format=torch.contiguous_format)


def channels_last(x: Tensor, device: torch.device) -> Tensor:
    return x.to(device).contiguous(memory_format=torch.channels_last)


def synthesize_tiled(
    model: RBN, y_hat: Tensor, device: torch.device, tile_px: int = 1024, halo_px: int = 96, *,
    wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """g_s over latent tiles of a fixed layout, each with a halo of context, run in parallel.

    The layout depends only on the image size, so the pixels do not depend on how many threads
    decode it, and peak memory stays that of one tile per worker (a 12 MP photo is ~12 tiles).
    Tiles are fixed in sRGB pixels, so models of either latent stride see the same context.
    wb (1, 4) and cam_to_srgb (1, 3, 3), the photo's colour metadata (None for format-1 files),
    go to every tile's synthesis; models that do not need them ignore them.
    """
    colour = {"wb": None if wb is None else wb.to(device),
              "cam_to_srgb": None if cam_to_srgb is None else cam_to_srgb.to(device)}  # fmt: skip
    _, _, h, w = y_hat.shape
    scale = model.config.latent_stride
    tile, halo = tile_px // scale, halo_px // scale
    out = torch.empty(1, 3, h * scale, w * scale)
    boxes = [(i, j) for i in range(0, h, tile) for j in range(0, w, tile)]

    @torch.inference_mode()  # grad mode is per thread: the pool's threads need it too
    def run(box: tuple[int, int]) -> None:
        i, j = box
        i0, j0 = max(i - halo, 0), max(j - halo, 0)
        i1, j1 = min(i + tile + halo, h), min(j + tile + halo, w)
        x = model.synthesize(channels_last(y_hat[:, :, i0:i1, j0:j1], device), **colour).cpu()
        ti, tj = min(tile, h - i), min(tile, w - j)
        oi, oj = (i - i0) * scale, (j - j0) * scale
        out[:, :, i * scale : (i + ti) * scale, j * scale : (j + tj) * scale] = x[
            :, :, oi : oi + ti * scale, oj : oj + tj * scale
        ]

    with one_thread_per_op() as n_threads:
        if device.type == "cpu" and n_threads > 1 and len(boxes) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, boxes))
        else:
            for box in boxes:
                run(box)
    return out


def check_quality(model: RBN, quality: int) -> int:
    """1-based rate point -> 0-based index, with a readable error."""
    if not 1 <= quality <= model.n_rates:
        raise RawbitError(f"quality {quality} is out of range: this model has rate points 1 to {model.n_rates}")
    return quality - 1


@torch.inference_mode()
def encode_raw(
    raw: RawImage, model: RBN, model_id: str, quality: int, device: torch.device, exif: bytes = b"",
    name: str = "input",
) -> RbitFile:  # fmt: skip
    """Code one packed RAW photo at a rate point (1-based), as a format-3 file: colour metadata in
    the header, the probability path in exact integers (nets/probability.py)."""
    if not hasattr(model, "compress_latent"):
        raise ModelError("this model renders RAW photos without compressing them (an ISP-Net); "
                         "code with a codec such as the default or a cascade")
    q = check_quality(model, quality)
    if model.config.input == "srgb":
        raise RawbitError("this model encodes sRGB images, not RAW photos")
    # The header stores the colour metadata as float32, exactly what the networks receive.
    wb_values = bitstream.as_float32(raw.meta.wb)
    ccm_values = bitstream.as_float32(raw.meta.cam_to_srgb)
    problem = bitstream.colour_problem(wb_values, ccm_values)
    if problem:
        raise RawbitError(f"{name}: cannot be coded ({problem})")
    x = model.pad(torch.from_numpy(raw.packed).unsqueeze(0))  # (1, 4, h, w), padded
    if not torch.isfinite(x).all():
        raise RawbitError(f"{name}: cannot be coded (sensor values that are not numbers)")
    wb, ccm = _colour_tensors(wb_values, ccm_values)
    with _transforms_on(model, device):
        y = model.analyze(channels_last(x, device), wb.to(device), ccm.to(device)).cpu().contiguous()
    if not torch.isfinite(y).all():
        raise RawbitError(f"{name}: cannot be coded (the encoder's latent is not finite)")
    try:
        with guarded_rans(model):
            streams, latent_size = model.compress_latent(y, q, exact=True)
    except StreamError as e:
        raise RawbitError(f"{name}: cannot be coded ({e})") from e
    h, w = raw.size
    return RbitFile(
        model_id=model_id,
        quality=quality,
        height=h,
        width=w,
        pad=raw.pad,
        orientation=raw.meta.orientation,
        latent_size=latent_size,
        y_anchor=streams.y_anchor,
        y_rest=streams.y_rest,
        z=streams.z,
        exif=exif,
        wb=wb_values,
        cam_to_srgb=ccm_values,
    )


def _colour_tensors(wb, cam_to_srgb) -> tuple[Tensor | None, Tensor | None]:
    """Header colour metadata -> (1, 4) and (1, 3, 3) float32 tensors (None stays None)."""
    wb_t = None if wb is None else torch.tensor([list(wb)], dtype=torch.float32)
    ccm_t = None if cam_to_srgb is None else torch.tensor(list(cam_to_srgb), dtype=torch.float32).reshape(1, 3, 3)
    return wb_t, ccm_t


def check_decodable(f: RbitFile, model: RBN, name: str = "input", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Every header field against the model, before anything is allocated; the 0-based rate index.

    bitstream.parse has checked each field's own range; here the model decides the rest: its rate
    points, its latent size for this image size (stride and padding), whether it needs colour."""
    bitstream.check_pixel_limit(f.height, f.width, max_pixels, name)  # an RbitFile may come unparsed
    if model.config.output == "raw":
        raise ModelError(f"{name}: this model decodes to packed RAW (a compression teacher), not to photos")
    if not 1 <= f.quality <= model.n_rates:
        raise BitstreamError(f"{name}: damaged .rbit file (rate point {f.quality}, this model has 1..{model.n_rates})")
    expected = model.latent_size(*f.coded_size)
    if tuple(f.latent_size) != expected:
        raise BitstreamError(
            f"{name}: damaged .rbit file (latent size {f.latent_size[0]}×{f.latent_size[1]} does not match "
            f"the image size {f.width}×{f.height}: this model codes it as {expected[0]}×{expected[1]})"
        )
    problem = bitstream.colour_problem(f.wb, f.cam_to_srgb)
    if problem:
        raise BitstreamError(f"{name}: damaged .rbit file ({problem})")
    if getattr(model, "needs_colour", False) and (f.wb is None or f.cam_to_srgb is None):
        raise BitstreamError(
            f"{name}: this model needs the photo's colour metadata, which a format-{f.version} "
            "file does not carry"
        )
    return f.quality - 1


@torch.inference_mode()
def decode_rbit(
    f: RbitFile, model: RBN, device: torch.device, bits: int = 8, name: str = "input",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8 (or uint16 for bits=16) sRGB, orientation applied.

    Refuses, never crashes: the header is checked against the model first, each rANS stream is
    guarded before compressai's decoder sees it and must be consumed exactly as the encoder wrote
    it, and a latent or image that is not finite is a damaged stream, never NaN pixels."""
    q = check_decodable(f, model, name, max_pixels)
    lh, lw = f.latent_size
    exact = f.version >= 3  # formats 1-2 were coded with compressai's float path
    try:
        with (contextlib.nullcontext() if exact else float32_path_in_bands(model)), guarded_rans(model):
            y_hat = model.decompress_latent(LatentStreams(f.y_anchor, f.y_rest, f.z), (lh, lw), q, exact=exact)
    except StreamError as e:
        raise BitstreamError(f"{name}: damaged .rbit stream ({e})") from e
    except (RuntimeError, ValueError, OverflowError, MemoryError) as e:
        raise _decode_failure(name, f, e) from e
    if not torch.isfinite(y_hat).all():
        raise BitstreamError(f"{name}: damaged .rbit stream (latent values that are not finite)")
    wb, ccm = _colour_tensors(f.wb, f.cam_to_srgb)
    try:
        with _transforms_on(model, device):
            x_hat = synthesize_tiled(model, y_hat, device, wb=wb, cam_to_srgb=ccm)
    except (RuntimeError, MemoryError) as e:
        if not _is_out_of_memory(e):
            raise
        raise _decode_failure(name, f, e) from e
    x_hat = crop_to_photo(x_hat[0], f.pad, (f.height, f.width))
    if not torch.isfinite(x_hat).all():
        raise BitstreamError(f"{name}: damaged .rbit stream (the decoder's output is not finite)")
    return _photo(x_hat, f.orientation, bits)


def render_raw(raw: RawImage, model: torch.nn.Module, device: torch.device, bits: int = 8) -> np.ndarray:
    """A rendering network's sRGB photo of a packed RAW, no bits in between (an ISP-Net: the
    cascade's ceiling), cropped and oriented exactly like decode's output."""
    if not hasattr(model, "render"):
        raise ModelError("this model does not render RAW photos on its own")
    x = torch.from_numpy(raw.packed).unsqueeze(0)  # render pads to its own multiple and crops back
    wb, ccm = _colour_tensors(bitstream.as_float32(raw.meta.wb), bitstream.as_float32(raw.meta.cam_to_srgb))
    with torch.no_grad():
        x_hat = model.to(device).render(channels_last(x, device), wb.to(device), ccm.to(device)).cpu()
    return _photo(crop_to_photo(x_hat[0], raw.pad, raw.size), raw.meta.orientation, bits)


def _photo(x_hat: Tensor, orientation: int, bits: int) -> np.ndarray:
    """(3, H, W) float in [0, 1]-ish -> (H, W, 3) uint8/uint16, orientation applied."""
    scale = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    img = (x_hat.clamp(0, 1).permute(1, 2, 0).numpy() * scale).round().astype(dtype)
    return orient(img, orientation)


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "alloc" in str(e).lower() or "out of memory" in str(e).lower()


def _decode_failure(name: str, f: RbitFile, e: BaseException) -> BitstreamError:
    if _is_out_of_memory(e):
        return BitstreamError(f"{name}: not enough memory to decode a {f.width}×{f.height} photo")
    return BitstreamError(f"{name}: damaged .rbit stream ({_one_line(e)})")


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the rANS decoder's guard ---------------------------------------------------------------------
#
# compressai's rANS decoder (cpp_exts/rans/rans_interface.cpp, Rans64 from ryg_rans) trusts its
# input: Rans64DecInit reads two 32-bit words, every symbol's renormalisation may read one more, and a
# symbol in "bypass" mode reads one 4-bit group after another while they read 15, then that many groups
# again, with no check against the stream's end anywhere. An empty, short or re-split stream made it
# read past its buffer (SIGSEGV where the buffer ended a mapping). Hence, before it runs:
#   - a stream is whole 32-bit words, at least the 2 that initialisation reads, and no longer than the
#     encoder can write for its symbols (its output buffer is one word per symbol);
#   - it decodes a copy padded with zero words: 2 per symbol, 2 per 4-bit group of ones in the stream,
#     and 64 more. Past the end, zeros drain the decoder's state: a renormalisation reads one word, a
#     bypass run stops within the state's 64 bits and then reads its 15x-longer tail, which only groups
#     of ones in the stream itself can lengthen (measured: at most 2 + n + 2 * groups words in total,
#     over random, truncated, all-ones and hill-climbed streams; the padding doubles the per-symbol
#     share);
# and after it: the decoded symbols, encoded again, must give back the very stream (rANS is a bijection
# between a symbol sequence and the encoder's output), which both proves that the decoder read exactly
# the encoder's bytes and refuses any stream that a decoder would have read past. The encoder too
# trusts its input: its output buffer holds one word per symbol, and a value whose bypass code
# reaches 2**28 sends it into an endless loop; symbols it could not code are refused first.


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


def _encoded_bits_bound(values, indexes, cdfs, cdf_sizes, offsets) -> float | None:
    """The bits compressai's encoder spends on these symbols (an upper bound, to a bit a word): each
    symbol's information, log2(2**16 / frequency) in its table, plus the 4-bit groups of the values
    out of the table's range (bypass mode). None where a value is one the encoder cannot code at
    all: its loop over the 4-bit groups of a bypass value shifts a 32-bit int by 4 bits a group,
    which ends only below 2**28 (past that, and for the negative numbers an overflow makes, never)."""
    n = len(indexes)
    table = np.asarray(cdfs, dtype=np.int64)
    idx = np.fromiter(indexes, dtype=np.int64, count=n)
    val = np.fromiter(values, dtype=np.int64, count=n) - np.asarray(offsets, dtype=np.int64)[idx]
    max_value = np.asarray(cdf_sizes, dtype=np.int64)[idx] - 2
    bypass = (val < 0) | (val >= max_value)
    coded = np.where(bypass, max_value, val)  # the symbol the table codes: the escape for a bypass
    freq = table[idx, coded + 1] - table[idx, coded]
    # (+ 1e-4 a symbol: rANS rounds each step up by less than log2(1 + 2**-15) bits)
    bits = float(np.sum(16.0 - np.log2(np.maximum(freq, 1)))) + 1e-4 * n
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


def rans_decode(coder, stream: bytes, indexes, cdfs, cdf_sizes, offsets) -> list[int]:
    """compressai's decode_with_indexes, guarded (see above); raises StreamError for a bad stream."""
    n = len(indexes)
    check_stream(stream, n)
    values = coder._decoder.decode_with_indexes(stream + bytes(_padding(stream, n)), indexes, cdfs, cdf_sizes, offsets)
    if not _fits(_encoded_bits_bound(values, indexes, cdfs, cdf_sizes, offsets), n):
        raise StreamError("it decodes to values that no encoder wrote")  # nor could write
    if coder._encoder.encode_with_indexes(values, indexes, cdfs, cdf_sizes, offsets) != stream:
        raise StreamError("it was not consumed exactly as the encoder wrote it")
    return values


def rans_encode(coder, symbols, indexes, cdfs, cdf_sizes, offsets) -> bytes:
    """compressai's encode_with_indexes, for symbols it can code (see above), else StreamError."""
    if not _fits(_encoded_bits_bound(symbols, indexes, cdfs, cdf_sizes, offsets), len(indexes)):
        raise StreamError("latent values out of the entropy coder's range")
    return coder._encoder.encode_with_indexes(symbols, indexes, cdfs, cdf_sizes, offsets)


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
