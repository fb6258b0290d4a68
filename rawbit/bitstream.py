"""The .rbit container (docs/FORMAT.md): the only module that knows bytes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import construct as cs

from .errors import BitstreamError

MAGIC = b"RBIT"
VERSION = 1
CONTEXT_SCHEDULES = {"checkerboard": 1}

_HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int8ub,
    "model_id" / cs.Bytes(16),  # first 16 bytes of the weights' content hash
    "quality" / cs.Int8ub,  # rate point, 1-based
    "context" / cs.Int8ub,  # context schedule, CONTEXT_SCHEDULES
    "height" / cs.Int32ub,  # sRGB size of the coded crop, before orientation
    "width" / cs.Int32ub,
    "crop_top" / cs.Int8ub,  # rows/columns dropped from the visible area to reach RGGB
    "crop_left" / cs.Int8ub,
    "orientation" / cs.Int8ub,  # LibRaw flip code, applied at decode
    "latent_height" / cs.Int16ub,
    "latent_width" / cs.Int16ub,
    "z_length" / cs.Int32ub,  # hyperprior stream
    "y_anchor_length" / cs.Int32ub,  # first checkerboard pass inside the latent stream
    "y_length" / cs.Int32ub,  # latent stream (both passes)
    "exif_length" / cs.Int16ub,
)
_FILE = cs.Struct(
    "header" / _HEADER,
    "exif" / cs.Bytes(cs.this.header.exif_length),
    "z" / cs.Bytes(cs.this.header.z_length),
    "y" / cs.Bytes(cs.this.header.y_length),
    "crc32" / cs.Int32ub,  # of every byte before it
)
HEADER_SIZE = _HEADER.sizeof()


@dataclass(frozen=True)
class RbitFile:
    """A parsed .rbit file: header fields plus the two entropy-coded streams."""

    model_id: str  # 32 hex digits
    quality: int
    height: int
    width: int
    crop: tuple[int, int]
    orientation: int
    latent_size: tuple[int, int]
    z: bytes
    y_anchor: bytes
    y_rest: bytes
    exif: bytes = b""
    context: str = "checkerboard"
    version: int = VERSION

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the decoded photo, orientation applied."""
        return (self.width, self.height) if self.orientation & 4 else (self.height, self.width)


def build(f: RbitFile) -> bytes:
    """Serialise; the CRC32 covers header, EXIF and both streams."""
    header = dict(
        version=VERSION,
        model_id=bytes.fromhex(f.model_id),
        quality=f.quality,
        context=CONTEXT_SCHEDULES[f.context],
        height=f.height,
        width=f.width,
        crop_top=f.crop[0],
        crop_left=f.crop[1],
        orientation=f.orientation,
        latent_height=f.latent_size[0],
        latent_width=f.latent_size[1],
        z_length=len(f.z),
        y_anchor_length=len(f.y_anchor),
        y_length=len(f.y_anchor) + len(f.y_rest),
        exif_length=len(f.exif),
    )
    body = _HEADER.build(header) + f.exif + f.z + f.y_anchor + f.y_rest
    return body + zlib.crc32(body).to_bytes(4, "big")


def parse(data: bytes, name: str = "input") -> RbitFile:
    """Parse and verify; every way a file can be wrong becomes one BitstreamError."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError(f"{name}: not a .rbit file")
    if len(data) < HEADER_SIZE + 4:
        raise BitstreamError(f"{name}: truncated .rbit file")
    if data[4] > VERSION:
        raise BitstreamError(f"{name}: made by a newer rawbit (format {data[4]}); please upgrade")
    try:
        p = _FILE.parse(data)
    except cs.ConstructError as e:
        raise BitstreamError(f"{name}: truncated .rbit file") from e
    h = p.header
    end = HEADER_SIZE + h.exif_length + h.z_length + h.y_length
    if len(data) > end + 4:
        raise BitstreamError(f"{name}: unexpected bytes after the end of the .rbit data")
    if zlib.crc32(data[:end]) != p.crc32:
        raise BitstreamError(f"{name}: damaged .rbit file (checksum mismatch)")
    contexts = {v: k for k, v in CONTEXT_SCHEDULES.items()}
    if h.context not in contexts or h.y_anchor_length > h.y_length:
        raise BitstreamError(f"{name}: damaged .rbit file (bad header)")
    return RbitFile(
        model_id=h.model_id.hex(),
        quality=h.quality,
        height=h.height,
        width=h.width,
        crop=(h.crop_top, h.crop_left),
        orientation=h.orientation,
        latent_size=(h.latent_height, h.latent_width),
        z=p.z,
        y_anchor=p.y[: h.y_anchor_length],
        y_rest=p.y[h.y_anchor_length :],
        exif=p.exif,
        context=contexts[h.context],
        version=h.version,
    )
