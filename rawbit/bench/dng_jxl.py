"""`dng-jxl`: what a photographer can do today with DNG 1.7's lossy JPEG XL, as a bench codec.

The visible sensor mosaic is split into its four CFA planes, each normalised by its black and
white levels and put through a square-root tone curve (photon noise grows as the square root of
the signal, so equal steps after the curve cost equal visibility: the curve lossy RAW formats
use), quantised to 16 bits and tiled 2x2 into one greyscale image that JPEG XL codes. Decoding
inverts this and hands the mosaic to LibRaw with the reference settings (rawbit.render). The bpp
counts the JPEG XL bytes only: the DNG's few hundred bytes of metadata are left out in its favour.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import RawbitError
from .codecs import SWEEPS, Codec


@dataclass
class DngJxlCodec(Codec):
    """Sensor planes -> sqrt tone curve -> 16-bit JPEG XL; LibRaw renders the decoded mosaic."""

    name: str = "dng-jxl"
    kind: str = "raw"
    suffix: str = ".jxl"
    sweep: tuple[int, ...] = SWEEPS["jxl"] + (96, 99, 100)  # 100: JPEG XL's lossless mode
    _sources: dict[str, Path] = field(default_factory=dict, repr=False)

    def qualities(self) -> list[int]:
        """JPEG XL qualities, lowest first."""
        return sorted(self.sweep)

    def description(self) -> str:
        """Library version and the tone curve."""
        lib = "pillow-jxl-plugin " + metadata.version("pillow-jxl-plugin")
        return f"CFA planes, sqrt tone curve, 16-bit greyscale JPEG XL ({lib}), rendered by LibRaw"

    def encode(self, path: Path, reference: np.ndarray, quality: int) -> bytes:
        """The JPEG XL bytes of the tone-mapped, tiled CFA planes."""
        from PIL import Image

        mosaic, black, white = _read_mosaic(path)
        planes = _split(mosaic)
        tiles = [np.sqrt(np.clip((p - b) / max(white - b, 1.0), 0.0, 1.0)) for p, b in zip(planes, black)]
        image = np.round(_tile(tiles) * 65535.0).astype(np.uint16)
        buf = io.BytesIO()
        options = {"lossless": True} if quality >= 100 else {"quality": quality}
        Image.fromarray(image).save(buf, format="JXL", **options)
        data = buf.getvalue()
        self._sources[hashlib.sha256(data).hexdigest()] = Path(path)
        return data

    def decode(self, data: bytes) -> np.ndarray:
        """LibRaw's reference rendering of the decoded mosaic, oriented like every other output."""
        from PIL import Image

        from ..render import reference_rendering

        path = self._sources.get(hashlib.sha256(data).hexdigest())
        if path is None:
            raise RawbitError("dng-jxl decodes only what it encoded in this process (it needs the RAW's metadata)")
        mosaic, black, white = _read_mosaic(path)
        with Image.open(io.BytesIO(data)) as im:
            image = np.asarray(im).astype(np.float64) / 65535.0
        tiles = _untile(image, [p.shape for p in _split(mosaic)])
        planes = [b + np.square(t) * (white - b) for t, b in zip(tiles, black)]
        decoded = np.clip(np.round(_merge(planes, mosaic.shape)), 0, np.iinfo(mosaic.dtype).max)
        return reference_rendering(path, oriented=True, mosaic=decoded.astype(mosaic.dtype))


def _read_mosaic(path: Path) -> tuple[np.ndarray, list[float], float]:
    """The visible mosaic, the black level of each of its four 2x2 phases, and the white level."""
    from ..raw import open_raw

    with open_raw(path) as raw:
        mosaic = raw.raw_image_visible.copy()
        colors = raw.raw_colors_visible[:2, :2].reshape(-1)
        blacks = np.asarray(raw.black_level_per_channel, dtype=np.float64)
        return mosaic, [float(blacks[c]) for c in colors], float(raw.white_level)


def _split(mosaic: np.ndarray) -> list[np.ndarray]:
    return [mosaic[dy::2, dx::2].astype(np.float64) for dy in (0, 1) for dx in (0, 1)]


def _merge(planes: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape)
    for (dy, dx), p in zip(((0, 0), (0, 1), (1, 0), (1, 1)), planes):
        out[dy::2, dx::2] = p
    return out


def _tile(planes: list[np.ndarray]) -> np.ndarray:
    """Four planes (odd sizes differ by one) as one image, 2x2, edge-padded to equal sizes."""
    h, w = planes[0].shape
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1])), mode="edge") for p in planes]
    return np.block([[padded[0], padded[1]], [padded[2], padded[3]]])


def _untile(image: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    h, w = shapes[0]
    quads = [image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]]
    return [q[: s[0], : s[1]] for q, s in zip(quads, shapes)]
