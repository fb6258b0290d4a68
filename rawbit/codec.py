"""Encode and decode pipelines: packed RAW -> network -> streams -> container, and back."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from . import DEFAULT_EFFORT, archive, bitstream, correction, detail, isp, ladder
from .bitstream import DEFAULT_MAX_PIXELS, RbitFile
from .device import one_thread_per_op
from .errors import BitstreamError, ModelError, RawbitError
from .metrics import psnr_from_mse, rd_score
from .nets import RBN
from .nets.probability import float32_path_in_bands
from .nets.rbn import LatentStreams
from .rans import StreamError, guarded_rans
from .raw import RawImage, crop_to_photo, orient
from .render import RenderError, render_planes


@contextlib.contextmanager
def _transforms_on(model: RBN, device: torch.device) -> Iterator[None]:
    """Run the big transforms on `device`; the probability path (hyperprior, context, entropy
    parameters, gains) stays on the CPU so a file decodes identically whatever device made it.

    The transforms run channels-last (NHWC), which oneDNN's CPU convolutions take ~1.5x faster;
    inputs are converted with `channels_last`. Restored afterwards: exported weights must be
    contiguous. On a GPU, TF32 stays off: its 10-bit mantissas would move a GPU's photo ~1e-3 from
    a CPU's, and an archive layer (rawbit/archive.py) is a residual against that photo."""
    model.g_a.to(device, memory_format=torch.channels_last)
    model.g_s.to(device, memory_format=torch.channels_last)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        model.g_a.to("cpu", memory_format=torch.contiguous_format)
        model.g_s.to("cpu", memory_format=torch.contiguous_format)


def channels_last(x: Tensor, device: torch.device) -> Tensor:
    return x.to(device).contiguous(memory_format=torch.channels_last)


TILE_PX, HALO_PX = 1024, 96  # the decoder's synthesis tiles and their context, in sRGB pixels
# Context of the patches the correction filter is fitted on and the ways are tried on: their pixels
# agree with the decoder's to 67 dB (at most 2.3 of 255 at a patch's edge; Nikon D1), and each
# way's patches synthesise in 0.58x the time of HALO_PX's.
FIT_HALO_PX = 32


def synthesize_tiled(
    model: RBN, y_hat: Tensor, device: torch.device, tile_px: int = TILE_PX, halo_px: int = HALO_PX, *,
    wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """g_s over latent tiles of a fixed layout, each with a halo of context, run in parallel.

    The layout depends only on the image size, so the pixels do not depend on how many threads
    decode it, and peak memory stays that of one tile per worker (a 12 MP photo is ~12 tiles).
    Tiles are fixed in sRGB pixels, so models of either latent stride see the same context.
    wb (1, 4) and cam_to_srgb (1, 3, 3), the photo's colour metadata (None for format-1 files),
    go to every tile's synthesis; models that do not need them ignore them.
    """
    _, _, h, w = y_hat.shape
    scale = model.config.latent_stride
    out = torch.empty(1, 3, h * scale, w * scale)
    boxes = _tile_layout(h, w, tile_px // scale)

    def take(box: tuple[int, int, int, int], x: Tensor) -> None:
        i, j, ti, tj = box
        out[:, :, i * scale : (i + ti) * scale, j * scale : (j + tj) * scale] = x

    synthesize_boxes(model, y_hat, device, boxes, halo_px, take, wb=wb, cam_to_srgb=cam_to_srgb)
    return out


def synthesize_boxes(
    model: RBN, y_hat: Tensor, device: torch.device, boxes: list[tuple[int, int, int, int]], halo_px: int,
    take: Callable[[tuple[int, int, int, int], Tensor], None], *,
    wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
) -> None:  # fmt: skip
    """g_s of each latent box (top, left, rows, columns) with `halo_px` of context around it, run in
    parallel; `take(box, x)` receives each box's (1, 3, rows * stride, columns * stride) pixels."""
    colour = {"wb": None if wb is None else wb.to(device),
              "cam_to_srgb": None if cam_to_srgb is None else cam_to_srgb.to(device)}  # fmt: skip
    _, _, h, w = y_hat.shape
    scale = model.config.latent_stride
    halo = halo_px // scale

    @torch.inference_mode()  # grad mode is per thread: the pool's threads need it too
    def run(box: tuple[int, int, int, int]) -> None:
        i, j, ti, tj = box
        i0, j0, i1, j1 = _with_halo(box, halo, h, w)
        x = model.synthesize(channels_last(y_hat[:, :, i0:i1, j0:j1], device), **colour).cpu()
        oi, oj = (i - i0) * scale, (j - j0) * scale
        take(box, x[:, :, oi : oi + ti * scale, oj : oj + tj * scale])

    _run_boxes(run, boxes, device)


def analyze_tiled(
    model: RBN, x: Tensor, device: torch.device, wb: Tensor, cam_to_srgb: Tensor, tile_px: int = TILE_PX
) -> Tensor:  # fmt: skip
    """g_a of the padded input x (1, C, h, w) -> y (1, M, h', w') on the CPU, over tiles of a fixed
    layout with the model's `analysis_halo` of context, run in parallel: the latent of one pass over
    the photo up to float rounding (the halo holds every input a tile's latent reads; at the default
    tiles the 12 MP photo's latent was equal to the bit), for less time and memory. A 12 MP
    photo's first layer is 290 MB in one pass, whose every new array the kernel faults in page by
    page, and its pointwise GDNs run at memory speed; a tile's are 25 MB (stop 32, docs/bench.md: with
    the rANS coder fed arrays the 12 MP encode took 3.82-4.11 s instead of 4.31-4.67). A model with
    no local analysis runs in one pass."""
    colour = (wb.to(device), cam_to_srgb.to(device))
    halo = model.analysis_halo
    if halo is None:
        return model.analyze(channels_last(x, device), *colour).cpu().contiguous()
    scale = model.input_stride
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    y = torch.empty(1, model.config.latent_channels, h, w)
    boxes = _tile_layout(h, w, tile_px // model.config.latent_stride)

    @torch.inference_mode()  # grad mode is per thread: the pool's threads need it too
    def run(box: tuple[int, int, int, int]) -> None:
        i, j, ti, tj = box
        i0, j0, i1, j1 = _with_halo(box, halo, h, w)
        part = model.analyze(channels_last(x[:, :, i0 * scale : i1 * scale, j0 * scale : j1 * scale], device), *colour)
        y[:, :, i : i + ti, j : j + tj] = part[:, :, i - i0 : i - i0 + ti, j - j0 : j - j0 + tj].cpu()

    _run_boxes(run, boxes, device)
    return y


def _tile_layout(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(top, left, rows, columns) of tiles of `tile` cells over an h x w latent: a layout that depends
    on the size alone, never on the thread count."""
    return [(i, j, min(tile, h - i), min(tile, w - j)) for i in range(0, h, tile) for j in range(0, w, tile)]


def _with_halo(box: tuple[int, int, int, int], halo: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of `box` grown by `halo` cells on every side, within the h x w latent."""
    i, j, ti, tj = box
    return max(i - halo, 0), max(j - halo, 0), min(i + ti + halo, h), min(j + tj + halo, w)


def _run_boxes(run: Callable[[tuple[int, int, int, int]], None], boxes: list[tuple[int, int, int, int]],
               device: torch.device) -> None:  # fmt: skip
    """run(box) for every box: on a CPU with threads to spare, by a pool of as many workers as torch
    had threads (every op single-threaded, so nothing depends on the thread count:
    device.one_thread_per_op), else in turn."""
    with one_thread_per_op() as n_threads:
        if device.type == "cpu" and n_threads > 1 and len(boxes) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, boxes))
        else:
            for box in boxes:
                run(box)


@torch.inference_mode()
def encode_raw(
    raw: RawImage, model: RBN, model_id: str, quality: int, device: torch.device, exif: bytes = b"",
    name: str = "input", learned_only: bool = False, effort: str = DEFAULT_EFFORT,
) -> RbitFile:  # fmt: skip
    """Code one packed RAW photo at a quality (1-based), as a format-6 file: colour metadata in
    the header, the probability path in exact integers (nets/probability.py), and a correction
    filter for the learned photo when it pays (rawbit/correction.py). A quality above the learned
    points (rawbit/ladder.py) adds a detail layer (rawbit/detail.py; format 7 when a loop filter
    follows it) or is an archive setting (rawbit/archive.py, format 4). A setting with
    alternatives is coded the way that suits the photo best (_best_way); `effort` says which ways
    are weighed (rawbit.EFFORTS). `learned_only`: `quality` is one of the model's own rate points,
    what the network gives alone: no filter, no layer (format 3)."""
    if not hasattr(model, "compress_latent"):
        raise ModelError("this model renders RAW photos without compressing them (an ISP-Net); "
                         "code with a codec such as the default or a cascade")
    setting = ladder.check(model, quality, learned_only, effort)
    if model.config.input == "srgb":
        raise RawbitError("this model encodes sRGB images, not RAW photos")
    # The header stores the colour metadata as float32, exactly what the networks receive.
    wb_values = bitstream.as_float32(raw.meta.wb)
    ccm_values = bitstream.as_float32(raw.meta.cam_to_srgb)
    problem = bitstream.colour_problem(wb_values, ccm_values)
    if setting.archive_shift and not problem:  # never write a file the decoder would refuse
        problem = bitstream.archive_problem(*raw.size, quality, setting.rate, setting.archive_shift, ccm_values)
        problem = problem and f"not at an archive setting: {problem}"
    if setting.detail_step and not problem:  # the target is LibRaw's rendering of these planes
        problem = bitstream.render_problem(*raw.size, ccm_values, "a detail layer")
        problem = problem and f"not at a detail setting: {problem}"
    if problem:
        raise RawbitError(f"{name}: cannot be coded ({problem})")
    x = model.pad(torch.from_numpy(raw.packed).unsqueeze(0))  # (1, 4, h, w), padded
    if not torch.isfinite(x).all():
        raise RawbitError(f"{name}: cannot be coded (sensor values that are not numbers)")
    wb, ccm = _colour_tensors(wb_values, ccm_values)
    with _transforms_on(model, device):
        y = analyze_tiled(model, x, device, wb, ccm)
    if not torch.isfinite(y).all():
        raise RawbitError(f"{name}: cannot be coded (the encoder's latent is not finite)")
    header = dict(model_id=model_id, height=raw.size[0], width=raw.size[1], pad=raw.pad,
                  orientation=raw.meta.orientation, exif=exif, wb=wb_values, cam_to_srgb=ccm_values)  # fmt: skip
    f, y_hat = _learned_layer(model, y, setting.rate, header, name)
    if learned_only:
        return f
    # A layer is taken against exactly the photo the decoder will synthesise from these bits (the
    # y_hat the decoder rebuilds: the same integer arithmetic, tests/test_codec.py).
    balanced = isp.white_balance(torch.from_numpy(raw.packed)[None].double(), wb.double())[0].clamp(0.0, 1.0)
    if setting.archive_shift:
        photo = _synthesized_photo(f, model, y_hat, device, name)
        return _with_archive(f, photo, balanced, ccm, quality, setting.archive_shift, name)
    f, step, whole = dataclasses.replace(f, version=6), setting.detail_step, None
    if setting.alternatives and not bitstream.render_problem(f.height, f.width, ccm_values, "a trial"):
        try:  # the trial renders the photo as LibRaw does: without that, the setting's own way
            f, y_hat, step, whole = _best_way(setting, (f, y_hat), y, header, model, balanced, wb, ccm, device, name)
        except (RenderError, ValueError) as e:
            if step:
                raise _unrenderable(name, e) from e
        else:
            if not step:
                return f  # a learned point, its correction filter already fitted by the trial
    if step:
        f = _detail_file(f, model, y_hat, whole, balanced, ccm, quality, step, device, name)
        if setting.archive_above:
            return _under_archive(f, setting.archive_above, model, y, header, balanced, ccm, device, name)
        return f
    if bitstream.render_problem(f.height, f.width, ccm_values, "a correction"):
        return f  # the filter is fitted to LibRaw's rendering: without one, the photo goes as it is
    try:
        targets = _correction_targets(f, model, balanced, ccm)
        return _with_correction(f, _correction_pairs(f, model, y_hat, targets, wb, ccm, device, name)[0])
    except (RenderError, ValueError):
        return f


def _detail_file(
    f: RbitFile, model: RBN, y_hat: Tensor, whole: Whole | None, balanced: Tensor, ccm: Tensor, quality: int,
    step: int, device: torch.device, name: str,
) -> RbitFile:  # fmt: skip
    """`f` (a learned layer) with its correction filter, a detail layer of `step` and its loop filter."""
    if whole is None:
        photo = _synthesized_photo(f, model, y_hat, device, name)
        try:
            target = _rendering(balanced, f.pad, (f.height, f.width), ccm)
        except (RenderError, ValueError) as e:
            raise _unrenderable(name, e) from e
    else:  # a small photo's trial made both already
        photo, target = whole
    f = _with_correction(f, correction.patches(_visible(photo, f), target))
    base, target = _detail_base(photo, f), orient(target, f.orientation)
    f, residual = _with_detail(f, base, target, quality, step, name)
    return _with_loop(f, base, residual, target, name)


def _with_archive(
    f: RbitFile, photo: Tensor, balanced: Tensor, ccm: Tensor, quality: int, shift: int, name: str
) -> RbitFile:  # fmt: skip
    """`f` (a learned layer) with an archive layer of step 2**-shift over `photo`, its synthesis."""
    stream = archive.encode(balanced, photo, ccm[0], shift)
    archive.parse(stream, f.coded_size, name)  # its structure as the decoder will check it
    return dataclasses.replace(f, version=4, quality=quality, archive=stream, archive_base=f.quality, archive_shift=shift)


def _under_archive(
    f: RbitFile, above: tuple[int, int], model: RBN, y: Tensor, header: dict, balanced: Tensor, ccm: Tensor,
    device: torch.device, name: str,
) -> RbitFile:  # fmt: skip
    """The finest detail setting's file `f`, or, where it is larger than the archive setting
    above would make ((rate point, shift): ladder.Setting.archive_above), an archive layer a step
    coarser over the same point: smaller than the one above, so the file grows with the quality.
    Costs the encoder that point's learned layer, its synthesis and the archive layer's coding."""
    rate, shift = above
    g, y_hat = _learned_layer(model, y, rate, header, name)
    photo = _synthesized_photo(g, model, y_hat, device, name)
    ceiling = len(bitstream.build(_with_archive(g, photo, balanced, ccm, f.quality + 1, shift, name)))
    if len(bitstream.build(f)) <= ceiling:
        return f
    coarser = _with_archive(g, photo, balanced, ccm, f.quality, shift - 1, name)
    return coarser if len(bitstream.build(coarser)) < ceiling else f


def _unrenderable(name: str, e: BaseException) -> RawbitError:
    return RawbitError(f"{name}: cannot be coded at a detail setting (LibRaw cannot render it: {_one_line(e)})")


def _learned_layer(model: RBN, y: Tensor, rate: int, header: dict, name: str) -> tuple[RbitFile, Tensor]:
    """The file of the learned layer alone at a rate point (1-based), and the dequantised latent
    the decoder will rebuild from it (the same integer arithmetic, tests/test_codec.py)."""
    try:
        with guarded_rans(model):
            streams, latent_size, y_hat = model.compress_latent(y, rate - 1, exact=True, y_hat=True)
    except StreamError as e:
        raise RawbitError(f"{name}: cannot be coded ({e})") from e
    f = RbitFile(quality=rate, latent_size=latent_size, y_anchor=streams.y_anchor, y_rest=streams.y_rest,
                 z=streams.z, **header)  # fmt: skip
    return f, y_hat


def _best_way(
    setting: ladder.Setting, first: tuple[RbitFile, Tensor], y: Tensor, header: dict, model: RBN, balanced: Tensor,
    wb: Tensor, ccm: Tensor, device: torch.device, name: str,
) -> tuple[RbitFile, Tensor, int, Whole | None]:  # fmt: skip
    """Of a setting's ways to code the photo (ladder.Setting.ways), the one that scores best of
    those whose trial falls between its floor's and its ceiling's, in bits and in PSNR, where it
    has them (when none does, its first way): (the learned layer's file, its latent, the detail
    step or 0, the whole photo and its rendering when the trial made them). A learned point's file
    comes with the correction filter its trial fitted: the same pairs the file's own fit would take."""
    targets = _correction_targets(first[0], model, balanced, ccm)
    tried: dict[int, tuple[RbitFile, RbitFile, Tensor, Pairs, Whole | None]] = {}

    def at(rate: int) -> tuple[RbitFile, RbitFile, Tensor, Pairs, Whole | None]:
        # (the file, with its filter, latent, pairs, whole photo) of a rate point: synthesised and
        # fitted once, whatever steps go over it
        if rate not in tried:
            f, y_hat = first if rate == setting.rate else _learned_layer(model, y, rate, dict(header, version=6), name)
            pairs, whole = _correction_pairs(f, model, y_hat, targets, wb, ccm, device, name)
            tried[rate] = (f, _with_correction(f, pairs), y_hat, pairs, whole)
        return tried[rate]

    def point(rate: int) -> tuple[float, float]:  # (PSNR, bits) of a learned point alone, with its filter
        _, filtered, _, pairs, _ = at(rate)
        return _trial(filtered, pairs, 0)

    # A way with more bits than the point below but a lower PSNR (the Kodak kodim15's layer at 4,
    # stop 29) would make the photo worse as the quality rises: both must lie between.
    floor = point(setting.floor) if setting.floor else (-math.inf, 0.0)
    ceiling = point(setting.ceiling) if setting.ceiling else (math.inf, math.inf)
    trials = []
    for rate, step in setting.ways():
        f, filtered, y_hat, pairs, whole = at(rate)
        psnr_db, bits = _trial(filtered, pairs, step)
        between = floor[0] < psnr_db < ceiling[0] and floor[1] < bits < ceiling[1]
        trials.append((between, rd_score(psnr_db, bits), f if step else filtered, y_hat, step, whole))
    best = max([t for t in trials if t[0]] or trials[:1], key=lambda t: t[1])  # the first of equals: the setting's own way
    return best[2:]


def _trial(f: RbitFile, pairs: Pairs, step: int) -> tuple[float, float]:
    """How well the learned layer of `f` (its correction filter fitted to `pairs`), with a detail
    layer of `step` when > 0, codes the photo, tried on `pairs` (_correction_pairs: patches spread
    over a large photo, else the whole): (PSNR in dB, bits), a layer coded and rebuilt, its bytes
    scaled from the patches' area to the photo's."""
    weights = correction.unpack(f.correction) if f.correction else None
    layer_bytes, area, error = 0, 0, 0.0
    for photo, target, _ in pairs:
        if weights is not None:
            photo = correction.apply(photo, weights).clamp(0.0, 1.0)
        base = photo.permute(1, 2, 0).double().numpy() * 255.0
        reference = target.astype(np.float64)
        stream, rebuilt = detail.encode(reference - base, step) if step else (b"", 0.0)
        error += float(((np.clip(np.round(base + rebuilt), 0, 255) - reference) ** 2).sum())
        layer_bytes, area = layer_bytes + len(stream), area + reference.shape[0] * reference.shape[1]
    bits = 8 * (len(bitstream.build(f)) + layer_bytes * f.height * f.width / area)
    mse = torch.tensor(error / (3 * area * 255.0**2), dtype=torch.float64)
    return float(psnr_from_mse(mse)), bits


def _rendering(
    balanced: Tensor, pad: tuple[int, int], size: tuple[int, int], ccm: Tensor, bits: int = 8
) -> np.ndarray:  # fmt: skip
    """(h, w, 3) uint8 (uint16 for bits=16), not oriented: LibRaw's reference rendering of
    white-balanced, clipped planes (a crop of them, from an even row and column of the padded
    mosaic, with `pad` (0, 0)). The encoder's targets and the archive decoder's photo."""
    return render_planes(balanced.numpy(), pad, size, ccm[0].double().numpy(), bits)


Targets = tuple[list[tuple[int, int]], list[np.ndarray]]
Pairs = list[tuple[Tensor, np.ndarray, int]]  # (learned photo, LibRaw's rendering, border) to fit a filter on
Whole = tuple[Tensor, np.ndarray]  # a small photo's synthesis (1, 3, H', W'), LibRaw's rendering (h, w, 3)


def _correction_targets(f: RbitFile, model: RBN, balanced: Tensor, ccm: Tensor) -> Targets:
    """(patch corners, LibRaw's rendering of each) where the correction filter is fitted: patches
    spread over a large photo (rawbit/correction.py), or ([], [the whole photo]) when it is small.
    The same for every way of coding the photo, so a setting's trial renders them once."""
    top, left = f.pad
    boxes = correction.patch_boxes((top, left, top + f.height, left + f.width), model.config.latent_stride)
    if not boxes:
        return [], [_rendering(balanced, f.pad, (f.height, f.width), ccm)]
    side, margin = correction.PATCH, correction.MARGIN
    targets = []
    for i, j in boxes:
        planes = balanced[:, (i - margin) // 2 : (i + side + margin) // 2, (j - margin) // 2 : (j + side + margin) // 2]
        target = _rendering(planes, (0, 0), (side + 2 * margin, side + 2 * margin), ccm)
        targets.append(target[margin : margin + side, margin : margin + side])
    return boxes, targets


def _correction_pairs(
    f: RbitFile, model: RBN, y_hat: Tensor, targets: Targets, wb: Tensor, ccm: Tensor, device: torch.device,
    name: str,
) -> tuple[Pairs, Whole | None]:  # fmt: skip
    """(learned photo, LibRaw's rendering, border) to fit the correction filter on, at a rate point:
    the learned photo where `targets` were rendered, each patch synthesised with FIT_HALO_PX of
    context; and, for a small photo, the whole photo synthesised and its rendering, for a layer."""
    boxes, renders = targets
    if not boxes:
        photo = _synthesized_photo(f, model, y_hat, device, name)
        return correction.patches(_visible(photo, f), renders[0]), (photo, renders[0])
    stride, side = model.config.latent_stride, correction.PATCH
    photos: dict[tuple[int, int, int, int], Tensor] = {}
    with _transforms_on(model, device):
        latent = [(i // stride, j // stride, side // stride, side // stride) for i, j in boxes]
        synthesize_boxes(model, y_hat, device, latent, FIT_HALO_PX, photos.__setitem__, wb=wb, cam_to_srgb=ccm)
    pairs = []
    for box, target in zip(latent, renders):
        photo = photos[box][0].clamp(0.0, 1.0)
        if not torch.isfinite(photo).all():
            raise RawbitError(f"{name}: cannot be coded (the decoder's output is not finite)")
        # one pixel of the patch's border has no neighbours in it: the filter sees them in the photo
        pairs.append((photo, target, 1))
    return pairs, None


def _with_correction(f: RbitFile, pairs: Pairs) -> RbitFile:
    """`f` with the correction filter fitted to `pairs`, the plain or the tone filter, when what it
    gains pays for its bytes (format 8 for a tone filter)."""
    weights = correction.best(pairs, len(bitstream.build(f)))
    if weights is None:
        return f
    return _filters_format(dataclasses.replace(f, correction=correction.pack(weights)))


def _filters_format(f: RbitFile) -> RbitFile:
    """`f` (format 6 to 8) in the format its filters need: 8 with a tone filter, so that every other
    file stays readable by decoders that predate it; else 7 with a loop filter, else 6."""
    tone = bitstream.TONE_CORRECTION_SIZE in (len(f.correction), len(f.loop))
    return dataclasses.replace(f, version=8 if tone else 7 if f.loop else 6)


def _with_detail(
    f: RbitFile, base: np.ndarray, target: np.ndarray, quality: int, step: int, name: str
) -> tuple[RbitFile, np.ndarray]:  # fmt: skip
    """(`f` with a detail layer, the residual the decoder will rebuild from it): the layer codes
    LibRaw's rendering of the file's own white-balanced sensor planes (`target`, oriented) less
    the photo the decoder will have before it (`base`)."""
    stream, residual = detail.encode(target.astype(np.float64) - base, step)
    detail.parse(stream, f.output_size, name)  # its structure as the decoder will check it
    return dataclasses.replace(f, quality=quality, detail=stream, detail_base=f.quality, detail_step=step), residual


def _with_loop(f: RbitFile, base: np.ndarray, residual: np.ndarray, target: np.ndarray, name: str) -> RbitFile:
    """`f` (with a detail layer) with a loop filter fitted to the photo the layer rebuilds over
    `base` (`residual`: as the decoder rebuilds it), against `target` (both oriented), when what
    it gains pays for its bytes (format 7; 8 with a tone filter).

    The detail layer's error is the quantiser's, spread over its 16x16 blocks; the correction
    filter's fit on the rebuilt photo takes a further +0.1-0.3 dB of it (real test cameras, detail
    settings), for the same 168 bytes (222 when the tone filter pays more)."""
    rebuilt = torch.from_numpy(np.clip(_layered(base, residual, b"", name) / 255.0, 0.0, 1.0)).permute(2, 0, 1)
    weights = correction.best(correction.patches(rebuilt, target), len(bitstream.build(f)))
    if weights is None:
        return f
    return _filters_format(dataclasses.replace(f, loop=correction.pack(weights)))


def _layered(base: np.ndarray, residual: np.ndarray, loop: bytes, name: str = "input") -> np.ndarray:
    """(H, W, 3) float64 on the 8-bit scale, oriented, not rounded: the learned photo plus a detail
    layer's residual, through a loop filter when the file has one."""
    image = base + residual
    if not loop:
        return image
    # In float32, as the correction filter runs (float64 convolutions are several times slower),
    # added as a change to the float64 photo: what the filter leaves alone stays exactly as it was.
    x = torch.from_numpy(np.clip(image / 255.0, 0.0, 1.0).astype(np.float32)).permute(2, 0, 1)
    change = (correction.apply(x, correction.unpack(loop, name)).clamp(0.0, 1.0) - x).permute(1, 2, 0).numpy()
    return np.clip(image, 0.0, 255.0) + change.astype(np.float64) * 255.0


def _visible(photo: Tensor, f: RbitFile, name: str = "input") -> Tensor:
    """(3, H, W) on [0, 1], not oriented: the learned photo of the visible area, through the file's
    correction filter when it has one."""
    x = crop_to_photo(photo[0], f.pad, (f.height, f.width)).clamp(0.0, 1.0)
    if f.correction:
        x = correction.apply(x, correction.unpack(f.correction, name)).clamp(0.0, 1.0)
    return x


def _detail_base(photo: Tensor, f: RbitFile, name: str = "input") -> np.ndarray:
    """(H, W, 3) float64 on the 8-bit scale, oriented: the learned photo a detail layer adds to,
    before rounding (the rounding happens once, after the residual is added)."""
    return orient(_visible(photo, f, name).permute(1, 2, 0).double().numpy() * 255.0, f.orientation)


def _colour_tensors(wb, cam_to_srgb) -> tuple[Tensor | None, Tensor | None]:
    """Header colour metadata -> (1, 4) and (1, 3, 3) float32 tensors (None stays None)."""
    wb_t = None if wb is None else torch.tensor([list(wb)], dtype=torch.float32)
    ccm_t = None if cam_to_srgb is None else torch.tensor(list(cam_to_srgb), dtype=torch.float32).reshape(1, 3, 3)
    return wb_t, ccm_t


def check_decodable(f: RbitFile, model: RBN, name: str = "input", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Every header field against the model, before anything is allocated; the 0-based rate index
    of the learned layer.

    bitstream.parse has checked each field's own range; here the model decides the rest: its rate
    points, its latent size for this image size (stride and padding), whether it needs colour."""
    bitstream.check_pixel_limit(f.height, f.width, max_pixels, name)  # an RbitFile may come unparsed
    if model.config.output == "raw":
        raise ModelError(f"{name}: this model decodes to packed RAW (a compression teacher), not to photos")
    rate = f.archive_base if f.archive else f.detail_base if f.detail else f.quality
    if f.archive:  # an RbitFile may come unparsed: the container's own checks of the layer first
        problem = bitstream.archive_problem(f.height, f.width, f.quality, f.archive_base, f.archive_shift, f.cam_to_srgb)
        if problem:
            raise BitstreamError(f"{name}: damaged .rbit file ({problem})")
    if not 1 <= rate <= model.n_rates:
        raise BitstreamError(f"{name}: damaged .rbit file (rate point {rate}, this model has 1..{model.n_rates})")
    if f.archive and not archive.levels(model):
        raise BitstreamError(f"{name}: damaged .rbit file (an archive layer over a model that has none)")
    if f.detail:
        problem = bitstream.detail_problem(f.quality, f.detail_base, f.detail_step)
        if problem:
            raise BitstreamError(f"{name}: damaged .rbit file ({problem})")
        if not archive.levels(model):
            raise BitstreamError(f"{name}: damaged .rbit file (a detail layer over a model that has none)")
    if f.correction:  # an RbitFile may come unparsed
        correction.unpack(f.correction, name)
    if f.loop:
        if not f.detail:
            raise BitstreamError(f"{name}: damaged .rbit file (a loop filter without a detail layer)")
        correction.unpack(f.loop, name)
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
    return rate - 1


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
    layer = archive.parse(f.archive, f.coded_size, name) if f.archive else None  # before the costly part
    details = detail.parse(f.detail, f.output_size, name) if f.detail else None
    photo = _learned_photo(f, model, device, name, q)
    if details is not None:
        image = _layered(_detail_base(photo, f, name), detail.decode(details, f.detail_step, name), f.loop, name)
        scale = 1.0 if bits == 8 else 65535.0 / 255.0
        return np.clip(np.round(image * scale), 0, 255 * scale).astype(np.uint8 if bits == 8 else np.uint16)
    if layer is None:
        return _photo(_visible(photo, f, name), f.orientation, bits)
    _, ccm = _colour_tensors(f.wb, f.cam_to_srgb)
    balanced = archive.decode(layer, photo, ccm[0], f.archive_shift, name)
    try:
        image = _rendering(balanced, f.pad, (f.height, f.width), ccm, bits)
    except (RenderError, ValueError) as e:  # the header's checks should leave none
        raise BitstreamError(f"{name}: damaged .rbit file (LibRaw cannot render its sensor data: {_one_line(e)})") from e
    return orient(image, f.orientation)


@torch.inference_mode()
def _learned_photo(f: RbitFile, model: RBN, device: torch.device, name: str, q: int) -> Tensor:
    """(1, 3, H', W') the synthesis transform's output at least the coded size, for a file
    `check_decodable` has checked (q: the rate index it gave)."""
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
    return _synthesized_photo(f, model, y_hat, device, name)


def _synthesized_photo(f: RbitFile, model: RBN, y_hat: Tensor, device: torch.device, name: str) -> Tensor:
    """(1, 3, H', W') the synthesis transform's output for a file's dequantised latent."""
    wb, ccm = _colour_tensors(f.wb, f.cam_to_srgb)
    try:
        with _transforms_on(model, device):
            x_hat = synthesize_tiled(model, y_hat, device, wb=wb, cam_to_srgb=ccm)
    except (RuntimeError, MemoryError) as e:
        if not _is_out_of_memory(e):
            raise
        raise _decode_failure(name, f, e) from e
    if not torch.isfinite(crop_to_photo(x_hat[0], f.pad, (f.height, f.width))).all():
        raise BitstreamError(f"{name}: damaged .rbit stream (the decoder's output is not finite)")
    return x_hat


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
