"""The Python API: what the CLI, bench and scripts call. Files in, bytes or pixels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import bitstream
from .codec import decode_rbit, encode_raw, pick_device
from .nets.registry import find_model, load_model
from .raw import camera_name, read_raw
from .render import reference_rendering

# The shipped model's rate point at lambda 0.0067, the default of earlier models too.
DEFAULT_QUALITY = 6


def encode(
    path: str | Path, *, model: str | Path | None = "default", quality: int = DEFAULT_QUALITY,
    device: str = "auto",
) -> bytes:  # fmt: skip
    """A RAW photo -> the bytes of a .rbit file."""
    loaded = load_model(model)
    raw = read_raw(path)
    f = encode_raw(raw, loaded.model, loaded.model_id, quality, pick_device(device), _exif(path))
    return bitstream.build(f)


def decode(
    data: bytes, *, model: str | Path | None = None, device: str = "auto", bits: int = 8,
    name: str = "input",
) -> np.ndarray:  # fmt: skip
    """The bytes of a .rbit file -> (H, W, 3) sRGB, uint8 (or uint16 for bits=16), oriented."""
    f = bitstream.parse(data, name)
    loaded = find_model(f.model_id, model)
    return decode_rbit(f, loaded.model, pick_device(device), bits)


def decode_png(
    data: bytes, *, model: str | Path | None = None, device: str = "auto", bits: int = 8,
    name: str = "input",
) -> bytes:  # fmt: skip
    """The bytes of a .rbit file -> the bytes of a PNG (8- or 16-bit), EXIF carried over."""
    from .files import png_bytes

    f = bitstream.parse(data, name)
    image = decode_rbit(f, find_model(f.model_id, model).model, pick_device(device), bits)
    return png_bytes(image, f.exif)


def info(data: bytes, name: str = "input") -> dict:
    """The header of a .rbit file as a plain dict (no model needed)."""
    f = bitstream.parse(data, name)
    h, w = f.output_size
    return {
        "format_version": f.version,
        "model_id": f.model_id,
        "quality": f.quality,
        "width": w,
        "height": h,
        "coded_size": [f.width, f.height],
        "crop": list(f.crop),
        "orientation": f.orientation,
        "context": f.context,
        "latent_size": list(f.latent_size),
        "bytes": len(data),
        "bpp": bits_per_pixel(len(data), f.width * f.height),
        "streams": {"hyperprior": len(f.z), "latent": len(f.y_anchor) + len(f.y_rest)},
        "exif_bytes": len(f.exif),
    }


def bits_per_pixel(n_bytes: int, n_pixels: int) -> float:
    """DESIGN.md's bpp: whole file bytes x 8 over sRGB pixels (header included)."""
    return n_bytes * 8.0 / n_pixels


def reference(path: str | Path) -> np.ndarray:
    """LibRaw's reference rendering, cropped and oriented exactly like decode's output."""
    return reference_rendering(path, oriented=True)


def model_qualities(model: str | Path | None = "default") -> list[int]:
    return list(range(1, load_model(model).model.n_rates + 1))


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
