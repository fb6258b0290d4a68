"""The codecs a bench compares: standard image codecs through Pillow, and rawbit's learned models."""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .. import DEFAULT_EFFORT
from ..errors import RawbitError

try:  # at import, so that --jobs worker processes (which unpickle codecs here) can save JXL too
    import pillow_jxl  # noqa: F401  registers the JXL plugin with Pillow

    _JXL = True
except ImportError:
    _JXL = False

# Quality sweeps chosen so each curve spans about 0.05..2 bpp on photographs (measured on the
# shared RAW files; see docs/bench.md). JPEG cannot go much below ~0.1 bpp whatever the quality,
# and its PSNR climbs steeply up to ~0.5 bpp: every quality from 1 and dense steps up there, so
# that "beats JPEG below 0.4 bpp" is judged against JPEG's real curve down to its lowest rate
# rather than a straight line between two distant points. One point near each codec's best (98-100)
# shows where it stands at the rates of rawbit's archive settings (2-5 bpp).
SWEEPS: dict[str, tuple[int, ...]] = {
    "jpeg": (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95, 98),
    "webp": (0, 5, 10, 20, 35, 50, 65, 80, 90, 95, 100),
    "avif": (5, 15, 25, 35, 45, 55, 65, 75, 85, 92, 98),
    "jxl": (5, 15, 25, 35, 45, 55, 65, 75, 85, 92, 98),
}
STANDARD = tuple(SWEEPS)


class Codec:
    """One thing on the RD plot: encode a photo at a rate point to whole-file bytes, and decode."""

    name: str  # label in every output, e.g. "jpeg" or "rawbit-default"
    kind: str  # "standard" (compresses the reference rendering) or "learned" (compresses the RAW)
    suffix: str = ".bin"  # file extension of what encode returns, for --keep-files

    def qualities(self) -> list[int]:
        """Rate points, lowest rate first."""
        raise NotImplementedError

    def description(self) -> str:
        """One line for the JSON `description`: library versions and settings."""
        raise NotImplementedError

    def cache_id(self) -> str:
        """Whatever changes this codec's output (library version, settings, weights), for cache keys."""
        return self.description()

    def prepare(self) -> None:
        """Load what every call needs once (weights), so the first timed point does not pay for it."""

    def encode(self, path: Path, reference: np.ndarray, quality: int) -> bytes:
        """The whole compressed file for one photo at one quality."""
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        """(H, W, 3) uint8 sRGB from a whole compressed file."""
        raise NotImplementedError


@dataclass
class PillowCodec(Codec):
    """JPEG, WebP, AVIF or JPEG XL of the reference rendering, with each library's default effort.

    Defaults (not maximum effort) are what a photographer's export dialog uses; only JPEG's
    Huffman optimisation is switched on because every photo exporter does it and it is lossless.
    """

    name: str
    sweep: tuple[int, ...] | None = None  # qualities to use instead of SWEEPS[name]
    kind: str = "standard"

    _FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "jxl": "JXL"}
    _SUFFIXES = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif", "jxl": ".jxl"}
    _OPTIONS = {"jpeg": {"optimize": True}, "webp": {}, "avif": {}, "jxl": {}}

    def __post_init__(self) -> None:
        if self.name not in self._FORMATS:
            raise RawbitError(f"unknown codec {self.name!r}; choose from {', '.join(STANDARD)}, dng-jxl")
        self.suffix = self._SUFFIXES[self.name]
        if self.name == "jxl" and not _JXL:
            raise RawbitError("jxl needs the pillow-jxl-plugin package")

    def qualities(self) -> list[int]:
        """The codec's quality sweep, lowest first."""
        return sorted(self.sweep or SWEEPS[self.name])

    def description(self) -> str:
        """Library versions and non-default options."""
        import PIL
        from PIL import features

        if self.name == "jpeg":
            turbo = features.version("libjpeg_turbo")
            lib = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
        elif self.name == "jxl":
            lib = "pillow-jxl-plugin " + metadata.version("pillow-jxl-plugin")
        else:
            lib = f"lib{self.name} {features.version(self.name)}"
        options = ", ".join(f"{k}={v}" for k, v in self._OPTIONS[self.name].items()) or "defaults"
        return f"{self._FORMATS[self.name]} of the reference rendering (Pillow {PIL.__version__}, {lib}, {options})"

    def encode(self, path: Path, reference: np.ndarray, quality: int) -> bytes:
        """Pillow save to memory at `quality`."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(reference, "RGB").save(
            buf, format=self._FORMATS[self.name], quality=quality, **self._OPTIONS[self.name]
        )
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Pillow open and convert to RGB."""
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


@dataclass
class RawbitCodec(Codec):
    """A rawbit model through the public API: RAW file -> whole .rbit bytes -> oriented sRGB."""

    model: str = "default"
    device: str = "cpu"
    kind: str = "learned"
    suffix: str = ".rbit"
    learned_only: bool = False  # the model's rate points alone, no detail or archive layer
    only: tuple[int, ...] = ()  # these qualities alone (empty: all the model offers)
    effort: str = DEFAULT_EFFORT  # the encoder's (rawbit.EFFORTS)

    @property
    def name(self) -> str:  # type: ignore[override]
        """"rawbit-<model>" (a weights file by its stem), "-<effort>" after it when not the default's:
        one namespace with the standard codecs, and usable as a file name in the outputs."""
        label = Path(self.model).stem if ("/" in self.model or self.model.endswith(".safetensors")) else self.model
        return f"rawbit-{label}" + ("" if self.effort == DEFAULT_EFFORT else f"-{self.effort}")

    def qualities(self) -> list[int]:
        """The qualities the model offers (rawbit/ladder.py), or those of `only`; one it does not
        offer is an error before anything is benched."""
        from .. import api

        try:
            return api.model_qualities(self.model, self.learned_only, self.only)
        except RawbitError as e:
            raise RawbitError(f"{self.name}: {e}") from e

    def description(self) -> str:
        """Model name and content hash."""
        from .. import api

        effort = "" if self.effort == DEFAULT_EFFORT else f", effort {self.effort}"
        return f"rawbit model {self.model} ({api.model_id(self.model)}) on {self.device}{effort}"

    def cache_id(self) -> str:
        """The model's content hash and the layers' coding: new weights, a new layer or a new
        quality ladder never reuse old points."""
        from .. import api, archive, correction, detail

        if self.learned_only:
            return f"{api.model_id(self.model)}+learned"
        layers = f"archive{archive.CODING}+detail{detail.CODING}+correction{correction.CODING}"
        from .. import ladder

        # the default effort's keys stay as they were (detail.CODING covers its tables)
        effort = "" if self.effort == DEFAULT_EFFORT else f"+{self.effort}-{ladder.effort_id(self.effort)}"
        return f"{api.model_id(self.model)}+{layers}{effort}"

    def prepare(self) -> None:
        """rawbit.api caches loaded models per process: load it now, outside the timed calls."""
        from .. import api

        api.model_id(self.model)

    def encode(self, path: Path, reference: np.ndarray, quality: int) -> bytes:
        """rawbit.api.encode of the RAW file itself."""
        from .. import api

        return api.encode(path, model=self.model, quality=quality, device=self.device, learned_only=self.learned_only,
                          effort=self.effort)  # fmt: skip

    def decode(self, data: bytes) -> np.ndarray:
        """rawbit.api.decode; the header names the model, ours is the hint for uninstalled weights."""
        from .. import api

        return api.decode(data, model=self.model, device=self.device)


def make_codecs(
    codecs: list[str], models: list[str], device: str = "cpu", learned_only: bool = False, qualities: tuple[int, ...] = (),
    efforts: tuple[str, ...] = (DEFAULT_EFFORT,),
) -> list[Codec]:  # fmt: skip
    """Codec objects for the CLI's --codecs and --models lists (models first, each at every effort
    of `efforts`); `qualities`: the models' qualities to bench (empty: all)."""
    from .dng_jxl import DngJxlCodec

    others = [DngJxlCodec() if c == "dng-jxl" else PillowCodec(c) for c in codecs]
    learned = [RawbitCodec(model=m, device=device, learned_only=learned_only, only=qualities, effort=e)
               for m in models for e in efforts]  # fmt: skip
    return learned + others
