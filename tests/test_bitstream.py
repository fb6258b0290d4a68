"""The .rbit container: exact layout, and every way a file can be wrong is one clear error."""

from __future__ import annotations

import dataclasses
import math
import resource
import time

import pytest

from rawbit import api, bitstream
from rawbit.errors import BitstreamError, InputError

WB = bitstream.as_float32([2.0071616, 1.0, 1.0, 1.6237807])
CCM = bitstream.as_float32([[1.96, -1.12, 0.16], [-0.24, 1.67, -0.43], [0.01, -0.55, 1.54]])
F = bitstream.RbitFile(
    model_id="0123456789abcdef0123456789abcdef", quality=3, height=1000, width=1499, pad=(0, 1),
    orientation=6, latent_size=(32, 48), z=b"zz" * 10, y_anchor=b"a" * 33, y_rest=b"b" * 44,
    exif=b"EXIF", wb=WB, cam_to_srgb=CCM,
)  # fmt: skip
F2 = dataclasses.replace(F, version=2, width=1500, pad=(0, 0), crop=(0, 1))
F1 = dataclasses.replace(F2, version=1, wb=None, cam_to_srgb=None)


def test_build_parse_round_trip_and_size():
    data = bitstream.build(F)
    assert data[:4] == b"RBIT" and data[4] == 3  # 4 only with an archive layer (test_archive.py)
    assert bitstream.HEADER_SIZE == 104
    assert len(data) == bitstream.HEADER_SIZE + 4 + 20 + 33 + 44 + 4
    assert bitstream.parse(data) == F
    assert F.output_size == (1499, 1000)  # orientation 6 swaps the axes
    assert F.coded_size == (1000, 1500)  # one column added before the photo to start on red
    assert F.cam_to_srgb_rows[1] == CCM[3:6]


def test_format_2_files_still_parse_with_their_crop():
    data = bitstream.build(F2)
    assert data[4] == 2 and len(data) == bitstream.HEADER_SIZES[2] + 4 + 20 + 33 + 44 + 4
    f = bitstream.parse(data)
    assert f == F2 and f.crop == (0, 1) and f.pad == (0, 0) and f.coded_size == (1000, 1500)


def test_format_1_files_still_parse_without_colour():
    data = bitstream.build(F1)
    assert data[4] == 1 and len(data) == bitstream.HEADER_SIZES[1] + 4 + 20 + 33 + 44 + 4
    f = bitstream.parse(data)
    assert f == F1 and f.wb is None and f.cam_to_srgb is None


def test_formats_2_and_3_need_colour_metadata():
    with pytest.raises(ValueError):
        bitstream.build(dataclasses.replace(F, wb=None))
    with pytest.raises(ValueError):
        bitstream.build(dataclasses.replace(F2, cam_to_srgb=None))


@pytest.mark.parametrize("cut", [1, 4, 5, 10, bitstream.HEADER_SIZES[1], bitstream.HEADER_SIZE, -1])
def test_truncated_files_are_refused(cut):
    data = bitstream.build(F)
    with pytest.raises(BitstreamError, match="truncated|not a .rbit"):
        bitstream.parse(data[:cut])


def test_every_single_flipped_bit_is_detected():
    for f in (F, F2, F1):
        data = bitstream.build(f)
        for i in range(4, len(data)):
            bad = bytearray(data)
            bad[i] ^= 0x10
            with pytest.raises(BitstreamError):
                bitstream.parse(bytes(bad))


def test_newer_format_version_asks_for_an_upgrade():
    data = bytearray(bitstream.build(F))
    data[4] = bitstream.VERSION + 1
    with pytest.raises(BitstreamError, match="newer"):
        bitstream.parse(bytes(data))


def test_format_version_0_is_a_damaged_file():
    data = bitstream.rewrite_header(bitstream.build(F1), version=0)
    with pytest.raises(BitstreamError, match=r"^x.rbit: damaged .rbit file \(format version 0\)$"):
        bitstream.parse(data, "x.rbit")


def test_not_an_rbit_file():
    with pytest.raises(BitstreamError, match="not a .rbit"):
        bitstream.parse(b"\x89PNG\r\n\x1a\n" + b"0" * 100)


# Header fields out of range, each with a valid CRC (anyone can write one): refused by name.
BAD_FIELDS = [
    (dict(height=0), "image size"),
    (dict(width=0), "image size"),
    (dict(height=0, width=0), "image size"),
    (dict(quality=0), "rate point 0"),
    (dict(pad_top=2), "pad"),
    (dict(pad_left=255), "pad"),
    (dict(orientation=8), "orientation"),
    (dict(orientation=255), "orientation"),
    (dict(context=0), "context"),
    (dict(context=255), "context"),
    (dict(latent_height=0), "latent size"),
    (dict(latent_width=31), "latent size"),
    (dict(latent_height=65532), "does not match the image size"),
    (dict(height=2**32 - 1), "does not match the image size"),
    (dict(y_anchor_length=78), "anchor stream longer"),
    (dict(wb=[math.nan, 1, 1, 1]), "white-balance"),
    (dict(wb=[0, 1, 1, 1]), "white-balance"),
    (dict(wb=[1, 1, 1, 65]), "white-balance"),
    (dict(wb=[1, 1, 1, -1]), "white-balance"),
    (dict(cam_to_srgb=[math.inf] + [0.0] * 8), "colour matrix"),
    (dict(cam_to_srgb=[100.0] + [0.0] * 8), "colour matrix"),
]


@pytest.mark.parametrize("fields,why", BAD_FIELDS, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_header_fields_out_of_range_are_damaged_files(fields, why):
    data = bitstream.rewrite_header(bitstream.build(F), **fields)
    with pytest.raises(BitstreamError, match="^f.rbit: damaged .rbit file") as e:
        bitstream.parse(data, "f.rbit")
    assert why in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BitstreamError, match="damaged"):
        api.info(data, "f.rbit")  # info too: no ZeroDivisionError for a zero size


@pytest.mark.parametrize("fields", [dict(crop_top=2), dict(crop_left=255)], ids=str)
def test_format_2_crop_out_of_range_is_a_damaged_file(fields):
    data = bitstream.rewrite_header(bitstream.build(F2), **fields)
    with pytest.raises(BitstreamError, match=r"^f.rbit: damaged .rbit file \(crop "):
        bitstream.parse(data, "f.rbit")


def test_consistent_sizes_of_any_stride_pass_the_container():
    for stride in (16, 32):
        m = 4 * stride
        lat = (-(-1000 // m) * m // stride, -(-1500 // m) * m // stride)
        bitstream.parse(bitstream.build(dataclasses.replace(F, latent_size=lat)))


def test_streams_longer_than_any_image_of_that_size_needs_are_refused():
    small = dataclasses.replace(F, height=16, width=16, latent_size=(4, 4), y_rest=b"b" * 200_000)
    with pytest.raises(BitstreamError, match="bytes of streams for 256 pixels"):
        bitstream.parse(bitstream.build(small))


def test_pixel_limit():
    data = bitstream.build(F)
    bitstream.parse(data, max_pixels=1499 * 1000)
    with pytest.raises(BitstreamError, match=r"1499×1000 image \(1499000 pixels\) is over .* limit of 1000 pixels"):
        bitstream.parse(data, max_pixels=1000)


def test_trailing_bytes_are_refused():
    with pytest.raises(BitstreamError, match="longer than its header says"):
        bitstream.parse(bitstream.build(F) + b"\0")


def test_rewrite_header_keeps_a_valid_checksum():
    data = bitstream.rewrite_header(bitstream.build(F), quality=7, orientation=0)
    f = bitstream.parse(data)
    assert (f.quality, f.orientation) == (7, 0) and f.y_rest == F.y_rest


def test_a_format_3_file_relabelled_format_4_is_a_damaged_file():
    """The fuzzers relabel versions: a format-3 header read as format 4 has no archive layer."""
    with pytest.raises(BitstreamError, match="damaged .rbit file .archive layer over rate point 0"):
        bitstream.parse(bitstream.rewrite_header(bitstream.build(F), version=4))


# --- reading a file: the header first, then exactly the bytes it announces ------------------------


def test_read_takes_exactly_the_announced_bytes(tmp_path):
    p = tmp_path / "a.rbit"
    p.write_bytes(bitstream.build(F))
    assert bitstream.read(p) == bitstream.build(F)
    assert api.info(p)["bytes"] == len(bitstream.build(F))
    p.write_bytes(bitstream.build(F)[:-3])
    with pytest.raises(BitstreamError, match=f"^{p}: truncated"):
        bitstream.read(p)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("valid_header", [True, False])
def test_a_huge_file_is_refused_without_reading_it(tmp_path, valid_header):
    """A 2 GiB file (sparse: no disk used) is refused after its header, in constant memory."""
    p = tmp_path / "huge.rbit"
    with open(p, "wb") as fh:
        fh.write(bitstream.build(F) if valid_header else b"\0" * 64)
        fh.truncate(2**31)
    before, start = _peak_rss_mib(), time.monotonic()
    for fn in (lambda: bitstream.read(p), lambda: api.info(p), lambda: api.decode(p, model="no-such-model")):
        with pytest.raises(BitstreamError, match="longer than its header says" if valid_header else "not a .rbit"):
            fn()
    assert time.monotonic() - start < 5
    assert _peak_rss_mib() - before < 64


def test_missing_and_unreadable_inputs_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        bitstream.read(tmp_path / "nope.rbit")
    with pytest.raises(InputError, match="folder"):
        bitstream.read(tmp_path)
