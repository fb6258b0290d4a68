"""Encode and decode pipelines: packed RAW -> network -> streams -> container, and back."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .bitstream import RbitFile
from .errors import BitstreamError, RawbitError
from .nets import RBN
from .raw import RawImage, orient


def pick_device(device: str = "auto") -> torch.device:
    """'auto' takes CUDA when present; asking for CUDA without it is a readable error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RawbitError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


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


# Latent rows per band of the probability path (see _probability_path). Fixed: the bands, not the
# thread count, decide how each convolution is computed, so both ends compute the same scales.
BAND_ROWS = 16


@contextlib.contextmanager
def _probability_path(model: RBN) -> Iterator[None]:
    """Single-threaded ops, with the context model and entropy parameters run over fixed bands of
    latent rows in parallel threads: at latent stride 16 they are ~40% of a decode, and one thread
    alone would leave the other cores idle. Used by encode and decode alike."""
    codec = model.latent_codec["y"]
    with _one_thread_per_op() as n_threads, contextlib.ExitStack() as stack:
        pool = None
        if n_threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = stack.enter_context(ThreadPoolExecutor(n_threads))
        # compressai's masked conv re-masks its weight tensor on every call; threads racing on that
        # swap would read freed memory. Mask once here and run the plain convolution.
        ctx = codec.context_prediction
        ctx.weight.data.mul_(ctx.mask)
        plain_ctx = functools.partial(torch.nn.Conv2d.forward, ctx)
        # (module, its forward, halo rows its output needs on each side): the 5x5 context conv, 2.
        for module, forward, halo in ((ctx, plain_ctx, 2), (codec.entropy_parameters, codec.entropy_parameters.forward, 0)):  # fmt: skip
            module.forward = functools.partial(_in_bands, forward, halo, pool)
            stack.callback(delattr, module, "forward")  # back to the class's forward
        yield


def _in_bands(forward, halo: int, pool, x: Tensor) -> Tensor:
    h = x.shape[-2]

    @torch.inference_mode()  # grad mode is per thread: the pool's threads need it too
    def band(a: int) -> Tensor:
        b = min(a + BAND_ROWS, h)
        a0, b0 = max(a - halo, 0), min(b + halo, h)
        return forward(x[..., a0:b0, :])[..., a - a0 : b - a0, :]

    starts = range(0, h, BAND_ROWS)
    return torch.cat(list(pool.map(band, starts)) if pool else [band(a) for a in starts], dim=-2)


@contextlib.contextmanager
def _one_thread_per_op() -> Iterator[int]:
    """Make every tensor op single-threaded (yields the thread count there was).

    A convolution's float result can depend on how its work is split across threads; one flipped
    scale index in the probability path would corrupt the rest of the stream, and one flipped
    rounding in the decoder changes a pixel. Ops run single-threaded and parallelism comes from
    independent tiles instead, so results do not depend on the machine's thread count.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield n
    finally:
        torch.set_num_threads(n)


def synthesize_tiled(
    model: RBN, y_hat: Tensor, device: torch.device, tile_px: int = 1024, halo_px: int = 96
) -> Tensor:
    """g_s over latent tiles of a fixed layout, each with a halo of context, run in parallel.

    The layout depends only on the image size, so the pixels do not depend on how many threads
    decode it, and peak memory stays that of one tile per worker (a 12 MP photo is ~12 tiles).
    Tiles are fixed in sRGB pixels, so models of either latent stride see the same context.
    """
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
        x = model.synthesize(channels_last(y_hat[:, :, i0:i1, j0:j1], device)).cpu()
        ti, tj = min(tile, h - i), min(tile, w - j)
        oi, oj = (i - i0) * scale, (j - j0) * scale
        out[:, :, i * scale : (i + ti) * scale, j * scale : (j + tj) * scale] = x[
            :, :, oi : oi + ti * scale, oj : oj + tj * scale
        ]

    with _one_thread_per_op() as n_threads:
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
        raise RawbitError(f"--quality must be between 1 and {model.n_rates} for this model")
    return quality - 1


@torch.inference_mode()
def encode_raw(
    raw: RawImage, model: RBN, model_id: str, quality: int, device: torch.device, exif: bytes = b""
) -> RbitFile:
    """Code one packed RAW photo at a rate point (1-based)."""
    q = check_quality(model, quality)
    if model.config.input == "srgb":
        raise RawbitError("this model encodes sRGB images, not RAW photos")
    x = model.pad(torch.from_numpy(raw.packed).unsqueeze(0))  # (1, 4, h, w), padded
    wb = torch.tensor([raw.meta.wb], dtype=torch.float32)
    ccm = torch.tensor([raw.meta.cam_to_srgb], dtype=torch.float32)
    with _transforms_on(model, device):
        y = model.analyze(channels_last(x, device), wb.to(device), ccm.to(device)).cpu().contiguous()
    with _probability_path(model):
        strings, latent_size = model.compress_latent(y, q)
    h, w = raw.size
    return RbitFile(
        model_id=model_id,
        quality=quality,
        height=h,
        width=w,
        crop=raw.crop,
        orientation=raw.meta.orientation,
        latent_size=latent_size,
        y_anchor=strings[0],
        y_rest=strings[1],
        z=strings[2],
        exif=exif,
    )


@torch.inference_mode()
def decode_rbit(f: RbitFile, model: RBN, device: torch.device, bits: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 (or uint16 for bits=16) sRGB, orientation applied."""
    q = check_quality(model, f.quality)
    lh, lw = f.latent_size
    if (lh, lw) != model.latent_size(f.height, f.width):
        raise BitstreamError("damaged .rbit file (latent size does not match the image size)")
    try:
        with _probability_path(model):
            y_hat = model.decompress_latent([f.y_anchor, f.y_rest, f.z], (lh, lw), q)
    except (RuntimeError, ValueError) as e:
        raise BitstreamError(f"damaged .rbit stream ({e})") from e
    with _transforms_on(model, device):
        x_hat = synthesize_tiled(model, y_hat, device)[0, :, : f.height, : f.width].clamp(0, 1)
    scale = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    img = (x_hat.permute(1, 2, 0).numpy() * scale).round().astype(dtype)
    return orient(img, f.orientation)
