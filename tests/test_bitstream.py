"""The .rbit container: exact layout, and every way a file can be wrong is one clear error."""

from __future__ import annotations

import pytest

from rawbit import bitstream
from rawbit.errors import BitstreamError

F = bitstream.RbitFile(
    model_id="0123456789abcdef0123456789abcdef", quality=3, height=1000, width=1500, crop=(0, 1),
    orientation=6, latent_size=(32, 48), z=b"zz" * 10, y_anchor=b"a" * 33, y_rest=b"b" * 44,
    exif=b"EXIF",
)  # fmt: skip


def test_build_parse_round_trip_and_size():
    data = bitstream.build(F)
    assert data[:4] == b"RBIT"
    assert len(data) == bitstream.HEADER_SIZE + 4 + 20 + 33 + 44 + 4
    assert bitstream.parse(data) == F
    assert F.output_size == (1500, 1000)  # orientation 6 swaps the axes


@pytest.mark.parametrize("cut", [1, 10, bitstream.HEADER_SIZE, -1])
def test_truncated_files_are_refused(cut):
    data = bitstream.build(F)
    with pytest.raises(BitstreamError, match="truncated|not a .rbit"):
        bitstream.parse(data[:cut])


def test_every_single_flipped_bit_is_detected():
    data = bitstream.build(F)
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


def test_not_an_rbit_file():
    with pytest.raises(BitstreamError, match="not a .rbit"):
        bitstream.parse(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
