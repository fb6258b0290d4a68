"""The .rbit container (docs/FORMAT.md): the only module that knows bytes.

Every header field is checked here, before anything is allocated for it: a reader learns from the
fixed header alone how long the file must be (`parse_header`), so `read` takes the header first and
then exactly the bytes it announces, and a file longer than that is refused unread.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, fields
from typing import BinaryIO

import construct as cs

from .errors import BitstreamError, input_error

MAGIC = b"RBIT"
VERSION = 8  # the newest format: parse() reads 1 to 8; rawbit writes 8 with a tone filter, else 7 with a loop filter, else 6, 3 for a learned point alone, 4 for an archive layer
CONTEXT_SCHEDULES = {"checkerboard": 1}

# A decoder refuses images of more pixels than this unless asked for more (api max_pixels): far above
# any camera (268 MP), yet it keeps a 3 KB file from asking for gigabytes of latent and pixels.
DEFAULT_MAX_PIXELS = 2**28
# Colour metadata in range: white-balance gains in (0, MAX_GAIN], matrix entries |v| < MAX_MATRIX.
MAX_GAIN = 64.0
MAX_MATRIX = 64.0
# The streams of a real file are far smaller than this per pixel (rANS codes at most 4 bytes per
# latent symbol, and no model has more than ~0.75 symbols per pixel); checked before reading them.
MAX_STREAM_BYTES_PER_PIXEL = 8
_STREAM_SLACK = 1 << 16

_FIELDS_V1 = (
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int8ub,
    "model_id" / cs.Bytes(16),  # first 16 bytes of the model's id
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
_FIELDS_COLOUR = (
    "wb" / cs.Array(4, cs.Float32b),  # white-balance gains R, G1, G2, B (RawMeta.wb)
    "cam_to_srgb" / cs.Array(9, cs.Float32b),  # camera RGB -> linear sRGB, 3x3 row-major
)
# Format 3: the same bytes, two meanings changed. The probability path is the exact integer one
# (rawbit.nets.probability), and the mosaic is padded, not cropped, to reach RGGB: pad_top/pad_left
# rows/columns were added before the visible area, and height x width is the whole visible area.
_FIELDS_V3 = tuple(
    {"crop_top": "pad_top" / cs.Int8ub, "crop_left": "pad_left" / cs.Int8ub}.get(f.name, f) for f in _FIELDS_V1
) + _FIELDS_COLOUR
# Format 4: format 3 plus an archive layer (rawbit.archive) after the latent stream.
_FIELDS_V4 = _FIELDS_V3 + (
    "archive_base" / cs.Int8ub,  # the learned layer's rate point (the header's quality is the user's)
    "archive_shift" / cs.Int8ub,  # step 2**-shift on LibRaw's output curve
    "archive_length" / cs.Int32ub,  # bytes of the archive layer
)
# Format 5: format 3 plus a detail layer (rawbit.detail) after the latent stream.
_FIELDS_V5 = _FIELDS_V3 + (
    "detail_base" / cs.Int8ub,  # the learned layer's rate point (the header's quality is the user's)
    "detail_step" / cs.Int8ub,  # quantiser step on the 8-bit scale
    "detail_length" / cs.Int32ub,  # bytes of the detail layer
)
# Format 6: format 5 plus a correction filter (rawbit.correction) between the latent stream and the
# detail layer; either may be absent (length 0; a file without a detail layer has base and step 0).
_FIELDS_V6 = _FIELDS_V5 + (
    "correction_length" / cs.Int16ub,  # 0 or CORRECTION_SIZE
)
# Format 7: format 6 plus a loop filter (rawbit.correction's filter again), applied after the detail
# layer, which it requires; its coefficients end the streams.
_FIELDS_V7 = _FIELDS_V6 + (
    "loop_length" / cs.Int16ub,  # CORRECTION_SIZE
)
# Format 8: format 7's header, where either filter may be the tone filter (TONE_CORRECTION_SIZE)
# and the loop filter may be absent (length 0); rawbit writes it only for a tone filter, so that a
# file older decoders can read stays readable by them.
_HEADERS = {
    1: cs.Struct(*_FIELDS_V1), 2: cs.Struct(*_FIELDS_V1, *_FIELDS_COLOUR), 3: cs.Struct(*_FIELDS_V3),
    4: cs.Struct(*_FIELDS_V4), 5: cs.Struct(*_FIELDS_V5), 6: cs.Struct(*_FIELDS_V6), 7: cs.Struct(*_FIELDS_V7),
    8: cs.Struct(*_FIELDS_V7),
}  # fmt: skip
HEADER_SIZES = {v: s.sizeof() for v, s in _HEADERS.items()}  # 52, 104, 104, 110, 110, 112, 114 and 114 bytes
HEADER_SIZE = HEADER_SIZES[3]
MAX_ARCHIVE_SHIFT = 12
MAX_DETAIL_STEP = 255
CORRECTION_SIZE = 168  # rawbit.correction: 3 x 28 int16
TONE_CORRECTION_SIZE = 222  # its tone filter: 3 x 37 int16 (format 8)
# LibRaw renders nothing smaller: an archive layer's planes go to LibRaw (rawbit.render.render_planes).
MIN_ARCHIVE_SIDE = 22
CRC_SIZE = 4


def filter_sizes(version: int) -> tuple[int, ...]:
    """The lengths a correction or loop filter may have in a file of `version` (>= 6)."""
    return (CORRECTION_SIZE, TONE_CORRECTION_SIZE) if version >= 8 else (CORRECTION_SIZE,)


@dataclass(frozen=True)
class RbitFile:
    """A parsed .rbit file: header fields plus the entropy-coded streams.

    `wb` (4 gains) and `cam_to_srgb` (9 values, the 3x3 matrix row-major) are the photo's colour
    metadata, as float32 values; formats 2 and 3 carry them, format 1 files have None.
    `crop` (formats 1-2) is what was cut from the visible area to reach RGGB; `pad` (format 3) what
    was added before it: the decoded image starts `pad` rows/columns before the photo.
    """

    model_id: str  # 32 hex digits
    quality: int
    height: int
    width: int
    orientation: int
    latent_size: tuple[int, int]
    z: bytes
    y_anchor: bytes
    y_rest: bytes
    crop: tuple[int, int] = (0, 0)
    pad: tuple[int, int] = (0, 0)
    exif: bytes = b""
    context: str = "checkerboard"
    version: int = 3
    wb: tuple[float, ...] | None = None
    cam_to_srgb: tuple[float, ...] | None = None
    archive: bytes = b""  # format 4: the archive layer, coded at rate point archive_base
    archive_base: int = 0
    archive_shift: int = 0
    detail: bytes = b""  # format 5: the detail layer, over rate point detail_base
    detail_base: int = 0
    detail_step: int = 0
    correction: bytes = b""  # format 6: the correction filter's coefficients, or none
    loop: bytes = b""  # format 7: the loop filter's coefficients (after the detail layer)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the decoded photo, orientation applied."""
        return output_size(self.height, self.width, self.orientation)

    @property
    def coded_size(self) -> tuple[int, int]:
        """(height, width) of the image the latent codes, padding for the CFA phase included."""
        return self.height + self.pad[0], self.width + self.pad[1]

    @property
    def cam_to_srgb_rows(self) -> tuple[tuple[float, ...], ...] | None:
        m = self.cam_to_srgb
        return None if m is None else (m[0:3], m[3:6], m[6:9])


@dataclass(frozen=True)
class RbitHeader:
    """The fixed header alone: enough to pick the model and to know how long the file must be."""

    version: int
    model_id: str
    quality: int
    context: str
    height: int
    width: int
    crop: tuple[int, int]
    pad: tuple[int, int]
    orientation: int
    latent_size: tuple[int, int]
    z_length: int
    y_anchor_length: int
    y_length: int
    exif_length: int
    wb: tuple[float, ...] | None
    cam_to_srgb: tuple[float, ...] | None
    archive_base: int = 0
    archive_shift: int = 0
    archive_length: int = 0
    detail_base: int = 0
    detail_step: int = 0
    detail_length: int = 0
    correction_length: int = 0
    loop_length: int = 0

    @property
    def header_size(self) -> int:
        return HEADER_SIZES[self.version]

    @property
    def file_size(self) -> int:
        """The exact size of the file this header announces."""
        streams = self.z_length + self.y_length + self.archive_length + self.detail_length + self.correction_length
        streams += self.loop_length
        return self.header_size + self.exif_length + streams + CRC_SIZE

    @property
    def pixels(self) -> int:
        return self.height * self.width


def output_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    return (width, height) if orientation & 4 else (height, width)


def as_float32(values) -> tuple[float, ...]:
    """Values rounded to float32 exactly as the header stores them (flattened)."""
    import struct

    flat = [float(v) for row in values for v in (row if hasattr(row, "__iter__") else (row,))]
    return struct.unpack(f">{len(flat)}f", struct.pack(f">{len(flat)}f", *flat))


def colour_problem(wb, cam_to_srgb) -> str | None:
    """Why colour metadata cannot be stored or trusted, or None when it is in range."""
    if wb is None and cam_to_srgb is None:
        return None
    if wb is None or cam_to_srgb is None or len(wb) != 4 or len(cam_to_srgb) != 9:
        return "incomplete colour metadata"
    if not all(math.isfinite(g) and 0.0 < g <= MAX_GAIN for g in wb):
        return f"white-balance gains out of range (0, {MAX_GAIN:g}]: {_fmt(wb)}"
    if not all(math.isfinite(v) and abs(v) < MAX_MATRIX for v in cam_to_srgb):
        return f"colour matrix entries out of range (|v| < {MAX_MATRIX:g}): {_fmt(cam_to_srgb)}"
    return None


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def build(f: RbitFile) -> bytes:
    """Serialise; the CRC32 covers header, EXIF and both streams.

    Writes the format `f.version` names: 8 (the encoder's when a filter is the tone filter), 7 (the
    encoder's with a loop filter after a detail layer),
    6 (the encoder's, with a correction filter, a detail layer, both or neither), 3 and 2 with the colour metadata, which they must then carry; 4, format 3 with
    an archive layer; 5, with a detail layer; 1, the older layout without colour (older formats are
    kept so tests can write the files older rawbit versions wrote)."""
    if f.version not in _HEADERS:
        raise ValueError(f"cannot write .rbit format {f.version}")
    if (f.version == 4) != bool(f.archive):
        raise ValueError("a format-4 .rbit file, and only one, carries an archive layer")
    if f.version in (5, 7) and not f.detail or f.detail and f.version not in (5, 6, 7, 8):
        raise ValueError("a format-5 or 7 .rbit file carries a detail layer, and only formats 5 to 8 can")
    if f.correction and len(f.correction) not in filter_sizes(f.version):
        raise ValueError(f"a format-{f.version} .rbit file cannot carry a correction filter of {len(f.correction)} bytes")
    if f.version == 7 and not f.loop or f.loop and (f.version < 7 or len(f.loop) not in filter_sizes(f.version) or not f.detail):
        raise ValueError("a format-7 .rbit file carries a loop filter, and only one of format 7 or 8 with a detail layer can")
    header = dict(
        version=f.version,
        model_id=bytes.fromhex(f.model_id),
        quality=f.quality,
        context=CONTEXT_SCHEDULES[f.context],
        height=f.height,
        width=f.width,
        orientation=f.orientation,
        latent_height=f.latent_size[0],
        latent_width=f.latent_size[1],
        z_length=len(f.z),
        y_anchor_length=len(f.y_anchor),
        y_length=len(f.y_anchor) + len(f.y_rest),
        exif_length=len(f.exif),
    )
    if f.version >= 3:
        header.update(pad_top=f.pad[0], pad_left=f.pad[1])
    else:
        header.update(crop_top=f.crop[0], crop_left=f.crop[1])
    if f.version >= 2:
        if f.wb is None or f.cam_to_srgb is None:
            raise ValueError(f"a format-{f.version} .rbit file carries the photo's wb and cam_to_srgb")
        header.update(wb=list(f.wb), cam_to_srgb=list(f.cam_to_srgb))
    if f.version == 4:
        header.update(archive_base=f.archive_base, archive_shift=f.archive_shift, archive_length=len(f.archive))
    if f.version >= 5:
        header.update(detail_base=f.detail_base, detail_step=f.detail_step, detail_length=len(f.detail))
    if f.version >= 6:
        header.update(correction_length=len(f.correction))
    if f.version >= 7:
        header.update(loop_length=len(f.loop))
    streams = f.z + f.y_anchor + f.y_rest + f.archive + f.correction + f.detail + f.loop
    body = _HEADERS[f.version].build(header) + f.exif + streams
    return body + zlib.crc32(body).to_bytes(CRC_SIZE, "big")


def _damaged(name: str, why: str) -> BitstreamError:
    return BitstreamError(f"{name}: damaged .rbit file ({why})")


def parse_header(data: bytes, name: str = "input", max_pixels: int | None = None) -> RbitHeader:
    """Parse and check the fixed header at the start of `data` (the rest need not be there).

    Every field is checked against its documented range and against the others: no later step
    allocates or decodes anything on the word of an unchecked field. `max_pixels` (None: no limit)
    refuses images larger than a decoder is willing to allocate for.
    """
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError(f"{name}: not a .rbit file")
    if len(data) < 5:
        raise BitstreamError(f"{name}: truncated .rbit file")
    version = data[4]
    if version == 0:
        raise _damaged(name, "format version 0")
    if version > VERSION:
        raise BitstreamError(f"{name}: made by a newer rawbit (format {version}); please upgrade")
    size = HEADER_SIZES[version]
    if len(data) < size:
        raise BitstreamError(f"{name}: truncated .rbit file")
    h = _HEADERS[version].parse(data[:size])
    contexts = {v: k for k, v in CONTEXT_SCHEDULES.items()}
    if h.context not in contexts:
        raise _damaged(name, f"unknown context schedule {h.context}")
    if h.quality < 1:
        raise _damaged(name, "rate point 0; rate points start at 1")
    if h.height < 1 or h.width < 1:
        raise _damaged(name, f"image size {h.width}×{h.height}")
    crop, pad = ((0, 0), (h.pad_top, h.pad_left)) if version >= 3 else ((h.crop_top, h.crop_left), (0, 0))
    if max(crop) > 1:
        raise _damaged(name, f"crop {crop}, at most 1")
    if max(pad) > 1:
        raise _damaged(name, f"pad {pad}, at most 1")
    if h.orientation > 7:
        raise _damaged(name, f"orientation {h.orientation}, not 0..7")
    lh, lw = h.latent_height, h.latent_width
    # y is coded in two checkerboard halves over z at 1/4 of its size: both sides multiples of 4.
    if lh < 4 or lw < 4 or lh % 4 or lw % 4:
        raise _damaged(name, f"latent size {lh}×{lw}")
    # Whatever the model's stride (a power of two), the latent covers the image with less than one
    # 4-latent block of padding: sizes that contradict each other are refused before any model.
    if not any(_latent_fits(h.height + pad[0], h.width + pad[1], lh, lw, s) for s in (8, 16, 32, 64)):
        raise _damaged(name, f"latent size {lh}×{lw} does not match the image size {h.width}×{h.height}")
    if h.y_anchor_length > h.y_length:
        raise _damaged(name, "anchor stream longer than the latent stream")
    pixels = h.height * h.width
    if h.z_length + h.y_length > MAX_STREAM_BYTES_PER_PIXEL * pixels + _STREAM_SLACK:
        raise _damaged(name, f"{h.z_length + h.y_length} bytes of streams for {pixels} pixels")
    wb = cam_to_srgb = None
    if version >= 2:
        wb, cam_to_srgb = tuple(h.wb), tuple(h.cam_to_srgb)
        problem = colour_problem(wb, cam_to_srgb)
        if problem:
            raise _damaged(name, problem)
    layers = {}  # the header fields of the layers this version carries
    if version == 4:
        problem = archive_problem(h.height, h.width, h.quality, h.archive_base, h.archive_shift, cam_to_srgb)
        if problem:
            raise _damaged(name, problem)
        # the residual of every photosite at <= 4 bytes (rANS), plus its tile scales
        if not 8 <= h.archive_length <= 4 * pixels + pixels // 64 + _STREAM_SLACK:
            raise _damaged(name, f"{h.archive_length} bytes of archive layer for {pixels} pixels")
        layers = dict(archive_base=h.archive_base, archive_shift=h.archive_shift, archive_length=h.archive_length)
    sizes = " or ".join(map(str, filter_sizes(version)))
    if version >= 6 and h.correction_length not in (0, *filter_sizes(version)):
        raise _damaged(name, f"a correction filter of {h.correction_length} bytes, not {sizes}")
    if version >= 7 and h.loop_length not in ((0,) if version == 8 else ()) + filter_sizes(version):
        raise _damaged(name, f"a loop filter of {h.loop_length} bytes, not {sizes}")
    if version >= 7 and h.loop_length and h.detail_length == 0:
        raise _damaged(name, "a loop filter without a detail layer")
    if version in (6, 8) and h.detail_length == 0:
        if h.detail_base or h.detail_step:
            raise _damaged(name, f"detail base {h.detail_base} and step {h.detail_step} without a detail layer")
    elif version >= 5:
        problem = detail_problem(h.quality, h.detail_base, h.detail_step)
        if problem:
            raise _damaged(name, problem)
        # every coefficient at <= 4 bytes (rANS, escapes included), plus its tile scales
        if not 8 <= h.detail_length <= 12 * pixels + pixels // 64 + _STREAM_SLACK:
            raise _damaged(name, f"{h.detail_length} bytes of detail layer for {pixels} pixels")
        layers = dict(detail_base=h.detail_base, detail_step=h.detail_step, detail_length=h.detail_length)
    if version >= 6:
        layers["correction_length"] = h.correction_length
    if version >= 7:
        layers["loop_length"] = h.loop_length
    check_pixel_limit(h.height, h.width, max_pixels, name)
    return RbitHeader(
        version=version,
        model_id=h.model_id.hex(),
        quality=h.quality,
        context=contexts[h.context],
        height=h.height,
        width=h.width,
        crop=crop,
        pad=pad,
        orientation=h.orientation,
        latent_size=(lh, lw),
        z_length=h.z_length,
        y_anchor_length=h.y_anchor_length,
        y_length=h.y_length,
        exif_length=h.exif_length,
        wb=wb,
        cam_to_srgb=cam_to_srgb,
        **layers,
    )


def archive_problem(height: int, width: int, quality: int, base: int, shift: int, cam_to_srgb) -> str | None:
    """Why a format-4 header's archive fields cannot be right, or None: a layer over a rate point at
    or above the quality asked for, a step out of range, a photo too small for LibRaw, or a colour
    matrix the decoder cannot take back (its inverse predicts the planes and gives LibRaw its matrix)."""
    if base < 1 or base >= quality:
        return f"archive layer over rate point {base}, for quality {quality}"
    if not 1 <= shift <= MAX_ARCHIVE_SHIFT:
        return f"archive step 2^-{shift}"
    return render_problem(height, width, cam_to_srgb, "an archive layer")


def render_problem(height: int, width: int, cam_to_srgb, layer: str) -> str | None:
    """Why LibRaw cannot render a photo's planes for a layer (`rawbit.render.render_planes`), or
    None: a photo too small for LibRaw, or a colour matrix that cannot be taken back."""
    if min(height, width) < MIN_ARCHIVE_SIDE:
        return f"{layer} for a {width}×{height} photo (at least {MIN_ARCHIVE_SIDE} a side)"
    if cam_to_srgb is None:
        return f"{layer} without the photo's colour matrix"
    m = [list(cam_to_srgb[0:3]), list(cam_to_srgb[3:6]), list(cam_to_srgb[6:9])]
    cof = [[m[(i + 1) % 3][(j + 1) % 3] * m[(i + 2) % 3][(j + 2) % 3] - m[(i + 1) % 3][(j + 2) % 3] * m[(i + 2) % 3][(j + 1) % 3]
            for j in range(3)] for i in range(3)]  # fmt: skip
    det = sum(m[0][j] * cof[0][j] for j in range(3))
    if not abs(det) > 0 or max(abs(c / det) for row in cof for c in row) >= MAX_MATRIX:
        return f"a colour matrix that cannot be inverted within range {_fmt(cam_to_srgb)}"
    return None


def detail_problem(quality: int, base: int, step: int) -> str | None:
    """Why a format-5 header's detail fields cannot be right, or None: a layer over a rate point at
    or above the quality asked for, or a step out of range."""
    if base < 1 or base >= quality:
        return f"detail layer over rate point {base}, for quality {quality}"
    if not 1 <= step <= MAX_DETAIL_STEP:
        return f"detail step {step}"
    return None


def check_pixel_limit(height: int, width: int, max_pixels: int | None, name: str = "input") -> None:
    """Refuse an image of more than `max_pixels` pixels (None: no limit) before anything is allocated."""
    pixels = height * width
    if max_pixels is not None and pixels > max_pixels:
        raise BitstreamError(
            f"{name}: a {width}×{height} image ({pixels} pixels) is over the decoder's limit of "
            f"{max_pixels} pixels (the limit can be raised for a photo this large)"
        )


def _latent_fits(height: int, width: int, lh: int, lw: int, stride: int) -> bool:
    m = 4 * stride  # the input multiple: images are padded to it
    return lh * stride == -(-height // m) * m and lw * stride == -(-width // m) * m


def parse(data: bytes, name: str = "input", max_pixels: int | None = None) -> RbitFile:
    """Parse and verify a whole file; every way it can be wrong becomes one BitstreamError."""
    h = parse_header(data, name, max_pixels)
    end = h.file_size - CRC_SIZE
    if len(data) < h.file_size:
        raise BitstreamError(f"{name}: truncated .rbit file")
    if len(data) > h.file_size:
        raise _too_long(name, h)
    if zlib.crc32(memoryview(data)[:end]) != int.from_bytes(data[end:], "big"):
        raise _damaged(name, "checksum mismatch")
    at = h.header_size
    exif = bytes(data[at : at + h.exif_length])
    at += h.exif_length
    z = bytes(data[at : at + h.z_length])
    at += h.z_length
    y_anchor = bytes(data[at : at + h.y_anchor_length])
    y_rest = bytes(data[at + h.y_anchor_length : at + h.y_length])
    at += h.y_length
    correction = bytes(data[at : at + h.correction_length])
    layer = {"detail" if h.version >= 5 else "archive": bytes(data[at + h.correction_length : end - h.loop_length])}
    loop = bytes(data[end - h.loop_length : end])
    shared = {f.name for f in fields(RbitFile)} & {f.name for f in fields(RbitHeader)}
    return RbitFile(
        z=z, y_anchor=y_anchor, y_rest=y_rest, exif=exif, correction=correction, loop=loop, **layer,
        **{k: getattr(h, k) for k in shared},
    )  # fmt: skip


def read(path: str | os.PathLike, name: str | None = None, max_pixels: int | None = None) -> bytes:
    """The bytes of a .rbit file, read header first: its fields are checked before the rest is read,
    and then exactly the bytes it announces are; a file longer than that is refused unread.

    Memory stays that of the announced file, whatever the size of what `path` holds."""
    name = str(path) if name is None else name
    try:
        with open(path, "rb") as fh:
            return read_from(fh, name, max_pixels)
    except OSError as e:
        raise input_error(name, e) from e


def read_from(fh: BinaryIO, name: str = "input", max_pixels: int | None = None) -> bytes:
    """`read` on an open binary file: header first, then exactly the rest it announces."""
    head = _read_exactly(fh, 5)
    size = HEADER_SIZES.get(head[4], 5) if len(head) == 5 and head[:4] == MAGIC else 5
    head += _read_exactly(fh, size - len(head))
    h = parse_header(head, name, max_pixels)  # refuses before anything else is read
    rest = _read_exactly(fh, h.file_size - len(head) + 1)  # one byte more: is there more?
    if len(head) + len(rest) > h.file_size:
        raise _too_long(name, h)
    if len(head) + len(rest) < h.file_size:
        raise BitstreamError(f"{name}: truncated .rbit file")
    return head + rest


def _too_long(name: str, h: RbitHeader) -> BitstreamError:
    return BitstreamError(f"{name}: longer than its header says ({h.file_size} bytes): not one .rbit file")


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    """Up to n bytes (fewer only at the end of the file)."""
    chunks, left = [], n
    while left > 0:
        b = fh.read(min(left, 1 << 24))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def rewrite_header(data: bytes, **fields) -> bytes:
    """A copy of a whole .rbit file with header fields changed and the CRC32 made valid again.

    For tools and tests (fuzzing): anyone can write a valid CRC, so a reader must check every field
    on its own. Field names are the construct names of docs/FORMAT.md (e.g. height=0, version=1,
    wb=[...]); the streams and lengths are kept unless a field says otherwise."""
    version = fields.get("version", data[4])
    size = HEADER_SIZES[data[4]]
    header = dict(_HEADERS[data[4]].parse(data[:size]))
    header.pop("_io", None)
    header.update(fields)
    layout = _HEADERS.get(version, _HEADERS[data[4]])  # an unknown version keeps the old layout
    for new_name, old_name in (("pad_top", "crop_top"), ("pad_left", "crop_left")):  # across 2 <-> 3
        header.setdefault(new_name, header.get(old_name, 0))
        header.setdefault(old_name, header[new_name])
    for name in ("archive_base", "archive_shift", "archive_length", "detail_base", "detail_step", "detail_length",
                 "correction_length", "loop_length"):  # fmt: skip
        # 3 -> 4, 5 or 6: no layer, until a field says
        header.setdefault(name, 0)
    body = layout.build(header) + data[size:-CRC_SIZE]
    return body + zlib.crc32(body).to_bytes(CRC_SIZE, "big")
