"""The Python API: what the CLI, bench and scripts call. Files in, bytes or pixels out.

A .rbit input is either its bytes or a path; a path is read header first (rawbit.bitstream.read):
its fields are checked before the rest is read, and a file longer than its header says is refused
unread. Every error names the input (`name`, else the path, else "input").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import DEFAULT_EFFORT, DEFAULT_QUALITY, bitstream, ladder
from .bitstream import DEFAULT_MAX_PIXELS, RbitFile
from .codec import decode_rbit, encode_raw
from .device import pick_device
from .errors import ModelError
from .metrics import bpp
from .nets import weights
from .nets.registry import LoadedModel, list_models, load_model
from .raw import camera_name, read_raw
from .render import reference_rendering


RbitSource = bytes | bytearray | memoryview | str | os.PathLike


def encode(
    path: str | Path, *, model: str | Path | None = "default", quality: int = DEFAULT_QUALITY,
    device: str = "auto", learned_only: bool = False, effort: str = DEFAULT_EFFORT,
) -> bytes:  # fmt: skip
    """A RAW photo -> the bytes of a .rbit file (docs/FORMAT.md). `quality` indexes the model's
    quality ladder (rawbit/ladder.py); with `learned_only`, its own rate points, no layer above.
    `effort` (ladder.EFFORTS): how many ways of coding each quality the encoder weighs."""
    loaded = load_model(model)
    raw = read_raw(path)
    exif = _exif(path)
    f = encode_raw(
        raw, loaded.model, loaded.model_id, quality, pick_device(device), exif, name=str(path),
        learned_only=learned_only, effort=effort,
    )  # fmt: skip
    return bitstream.build(f)


def decode(
    data: RbitSource, *, model: str | Path | None = None, device: str = "auto", bits: int = 8,
    name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:  # fmt: skip
    """A .rbit file (bytes or path) -> (H, W, 3) sRGB, uint8 (or uint16 for bits=16), oriented.

    `model`: None finds the installed model that made the file; a name or a .safetensors path is
    used as given, and a file made by another model is refused. `max_pixels` refuses images larger
    than that (default 2**28; None: no limit) before anything is allocated for them."""
    f, loaded, name = _open(data, model, name, max_pixels)
    return decode_rbit(f, loaded.model, pick_device(device), bits, name=name, max_pixels=max_pixels)


def decode_png(
    data: RbitSource, *, model: str | Path | None = None, device: str = "auto", bits: int = 8,
    name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> bytes:  # fmt: skip
    """A .rbit file (bytes or path) -> the bytes of a PNG (8- or 16-bit), EXIF carried over."""
    from .files import png_bytes

    f, loaded, name = _open(data, model, name, max_pixels)
    image = decode_rbit(f, loaded.model, pick_device(device), bits, name=name, max_pixels=max_pixels)
    return png_bytes(image, f.exif)


def info(data: RbitSource, name: str | None = None) -> dict:
    """The header of a .rbit file (bytes or path) as a plain dict (no model needed)."""
    name = _name(data, name)
    raw = _read(data, name, None)
    f = bitstream.parse(raw, name)
    h, w = f.output_size
    d = {
        "format_version": f.version,
        "model_id": f.model_id,
        "quality": f.quality,
        "width": w,
        "height": h,
        "coded_size": [f.coded_size[1], f.coded_size[0]],
        "crop": list(f.crop),
        "pad": list(f.pad),
        "orientation": f.orientation,
        "context": f.context,
        "latent_size": list(f.latent_size),
        "bytes": len(raw),
        "bpp": bpp(len(raw), f.height, f.width),
        "streams": {"hyperprior": len(f.z), "latent": len(f.y_anchor) + len(f.y_rest)},
        "exif_bytes": len(f.exif),
    }
    if f.archive:
        d["streams"]["archive"] = len(f.archive)
        d["archive"] = {"base_quality": f.archive_base, "step": f"1/{2 ** f.archive_shift}"}
    if f.correction:
        d["streams"]["correction"] = len(f.correction)
    if f.detail:
        d["streams"]["detail"] = len(f.detail)
        d["detail"] = {"base_quality": f.detail_base, "step": f.detail_step}
    if f.loop:
        d["streams"]["loop"] = len(f.loop)
    if f.wb is not None:
        d["white_balance"] = [round(v, 6) for v in f.wb]
        d["cam_to_srgb"] = [[round(v, 6) for v in row] for row in f.cam_to_srgb_rows]
    return d


def find_decoder(f: RbitFile | bitstream.RbitHeader, model: str | Path | None = None, name: str = "input") -> LoadedModel:
    """The model that decodes `f`: the one given (refused, naming both ids, if another made the
    file), else the installed model whose id the header carries. Format-1 files carry the legacy
    id of their model (nets/weights.py); an edited copy of a shipped model does not match it."""
    if model is not None:
        loaded = load_model(model)  # a missing or broken model file is its own one-line error
        if not weights.identify(loaded.path).made(f.model_id, f.version):
            raise ModelError(
                f"{name}: made with model {f.model_id}, not with the model given to decode it "
                f"({loaded.name}, {loaded.model_id})"
            )
        return loaded
    for path in list_models().values():
        try:
            ids = weights.identify(path)
        except ModelError:
            continue  # a broken file among the installed ones is not this file's model
        if ids.made(f.model_id, f.version):
            return load_model(path)
    raise ModelError(f"{name}: made with model {f.model_id[:12]}…, which is not installed")


def _open(data: RbitSource, model, name: str | None, max_pixels: int | None) -> tuple[RbitFile, LoadedModel, str]:
    name = _name(data, name)
    f = bitstream.parse(_read(data, name, max_pixels), name, max_pixels)
    return f, find_decoder(f, model, name), name


def _name(data: RbitSource, name: str | None) -> str:
    if name is not None:
        return name
    return os.fspath(data) if isinstance(data, (str, os.PathLike)) else "input"


def _read(data: RbitSource, name: str, max_pixels: int | None) -> bytes:
    if isinstance(data, (str, os.PathLike)):
        return bitstream.read(data, name, max_pixels)
    return bytes(data)


def reference(path: str | Path) -> np.ndarray:
    """LibRaw's reference rendering, cropped and oriented exactly like decode's output."""
    return reference_rendering(path, oriented=True)


def model_qualities(
    model: str | Path | None = "default", learned_only: bool = False, only: tuple[int, ...] = ()
) -> list[int]:  # fmt: skip
    """Every quality the model offers (rawbit/ladder.py): rate points, then detail and archive
    settings; with `learned_only`, its rate points alone. Those of `only` alone when given, one
    the model does not offer refused as `encode` refuses it."""
    m = load_model(model).model
    for q in only:
        ladder.check(m, q, learned_only)
    return [q for q in range(1, len(ladder.settings(m, learned_only)) + 1) if not only or q in only]


def model_id(model: str | Path | None = "default") -> str:
    return load_model(model).model_id


def _exif(path: str | Path) -> bytes:
    """A minimal EXIF block (make, model) so decoded PNGs still say which camera took them."""
    from PIL import Image

    make, cam_model = camera_name(path)
    if not make and not cam_model:
        return b""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make[:64], cam_model[:64]
    return exif.tobytes()
