"""The archive settings: a photographer asks for more than the learned decoder can give, and gets
the sensor data back within a known bound, rendered by LibRaw as the reference is.

What must hold: LibRaw renders sensor planes handed to it without their file as it renders the file;
an archive quality keeps every sensor value within half a step (on LibRaw's output curve) of the
original; quality rises through the archive settings up to >= 40 dB; the files are format 4 and say
so; a damaged archive layer is a one-line refusal.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rawbit import api, archive, bitstream, isp, ladder, laplace
from rawbit.codec import _learned_photo, check_decodable
from rawbit.errors import BitstreamError, RawbitError
from rawbit.metrics import psnr
from rawbit.nets.registry import DEFAULT_MODEL, list_models, load_model
from rawbit.raw import read_raw
from rawbit.render import reference_rendering, render_planes

from conftest import SAMPLE_DNG, needs_shared, shared_files, write_test_dng

TABLES_SHA256 = "181482938c319e94774d1ce3df334ab2d54daa92881962c16cc0416875bfad18"


def balanced_planes(path) -> tuple[np.ndarray, object]:
    raw = read_raw(path)
    return np.clip(raw.packed.astype(np.float64) * np.asarray(raw.meta.wb)[:, None, None], 0, 1), raw


def _libraw_gap(path) -> float:
    planes, raw = balanced_planes(path)
    return psnr(render_planes(planes, raw.pad, raw.size, np.asarray(raw.meta.cam_to_srgb)), reference_rendering(path))


@pytest.mark.parametrize("cfa", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_libraw_renders_the_planes_of_the_projects_dngs_as_it_renders_the_files(tmp_path, cfa):
    dng = write_test_dng(tmp_path / f"{cfa}.dng", height=130, width=182, cfa=cfa, seed=5, blocks=9)
    assert _libraw_gap(dng) >= 55.0


@needs_shared
@pytest.mark.parametrize("path", shared_files("raw") + shared_files("raw-more"), ids=lambda p: p.name)
def test_libraw_renders_the_planes_of_every_real_raw_as_it_renders_the_file(path):
    # (+-1 on every pixel would be ~48 dB; measured: 60-99 dB)
    assert _libraw_gap(path) >= 55.0


def archive_qualities(weights) -> list[int]:
    return [q for q, s in enumerate(ladder.settings(load_model(weights).model), 1) if s.archive_shift]


@pytest.fixture(scope="module")
def archived(tiny_weights) -> dict[int, bytes]:
    """The sample at the rate point under the archive settings (the model's best but
    archive.BASE_BELOW_TOP) and at each of them."""
    qualities = archive_qualities(tiny_weights)
    base = ladder.settings(load_model(tiny_weights).model)[qualities[0] - 1].rate
    return {q: api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu") for q in [base] + qualities}


def test_the_archive_settings_top_the_quality_ladder(tiny_weights):
    n = len(ladder.settings(load_model(tiny_weights).model))
    assert archive_qualities(tiny_weights) == list(range(n - len(archive.SHIFTS) + 1, n + 1))
    assert api.model_qualities(tiny_weights) == list(range(1, n + 1))
    with pytest.raises(RawbitError, match=f"and archive settings {n - 1} to {n}$"):
        api.encode(SAMPLE_DNG, model=tiny_weights, quality=n + 1, device="cpu")


def decoded_planes(data: bytes, weights) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The archive layer's planes and the original ones (with the header's float32 gains, as the
    encoder took them), both on the curve, and the file's shift."""
    f = bitstream.parse(data)
    model = load_model(weights).model
    photo = _learned_photo(f, model, torch.device("cpu"), "photo", check_decodable(f, model, "photo"))
    ccm = torch.tensor(f.cam_to_srgb, dtype=torch.float32).reshape(3, 3)
    planes = archive.decode(archive.parse(f.archive, f.coded_size), photo, ccm, f.archive_shift)
    return isp.gamma_curve(planes), f.archive_shift


def original_planes(path, wb) -> torch.Tensor:
    packed = torch.from_numpy(read_raw(path).packed).double()[None]
    return isp.gamma_curve(isp.white_balance(packed, torch.tensor([wb], dtype=torch.float64))[0])


def test_every_sensor_value_lies_within_half_a_step(archived, tiny_weights):
    for q, data in list(archived.items())[1:]:
        planes, shift = decoded_planes(data, tiny_weights)
        error = (planes - original_planes(SAMPLE_DNG, bitstream.parse(data).wb)).abs().max().item()
        assert error <= 2.0**-shift / 2 + 1e-9, (q, error)


def test_odd_sizes_other_phases_and_many_chunks_keep_the_bound(tmp_path, tiny_weights, monkeypatch):
    # 962 x 1090 RGGB would end on a 4-symbol chunk with 2**20-symbol chunks (compressai's encoder
    # cannot fit its state into so few): here the same arithmetic with small chunks, an odd size
    # and a GRBG sensor, whose mosaic is padded on both sides.
    monkeypatch.setattr(laplace, "CHUNK", 1000)
    dng = write_test_dng(tmp_path / "odd.dng", height=63, width=95, cfa="GRBG", seed=7)
    data = api.encode(dng, model=tiny_weights, quality=archive_qualities(tiny_weights)[-1], device="cpu")
    f = bitstream.parse(data)
    layer = archive.parse(f.archive, f.coded_size)
    assert len(layer.chunks) == -(-int(np.prod(layer.shape)) // 1000) > 1
    planes, shift = decoded_planes(data, tiny_weights)
    assert (planes - original_planes(dng, f.wb)).abs().max().item() <= 2.0**-shift / 2 + 1e-9
    out = api.decode(data, model=tiny_weights, device="cpu")
    assert out.shape == api.reference(dng).shape and psnr(out, api.reference(dng)) >= 40.0


def test_no_archive_layer_for_a_photo_libraw_would_not_render():
    # LibRaw reads no RAW under 22 pixels a side, so no encoder meets one; a crafted header can.
    eye = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert "at least 22 a side" in bitstream.archive_problem(21, 100, 13, 9, 7, eye)
    assert bitstream.archive_problem(22, 22, 13, 9, 7, eye) is None


def test_the_probability_tables_are_the_ones_files_were_written_with():
    # Built at run time from numpy and compressai: a change in either would make every archive
    # file undecodable, so their bytes are pinned.
    import hashlib

    digest = hashlib.sha256()
    for shift in (6, 7, 8):  # the steps files were written with, 1/64 among them
        cdfs, sizes, offsets = laplace.tables(2**shift)
        digest.update(np.asarray(cdfs, dtype=np.int64).tobytes() + np.asarray(sizes + offsets).tobytes())
    assert digest.hexdigest() == TABLES_SHA256


def test_quality_and_size_rise_through_the_archive_settings_to_the_reference(archived, tiny_weights):
    ref = api.reference(SAMPLE_DNG)
    scores = [psnr(api.decode(data, model=tiny_weights, device="cpu"), ref) for data in archived.values()]
    sizes = [len(data) for data in archived.values()]
    assert scores == sorted(scores) and len(set(scores)) == len(scores), scores
    assert sizes == sorted(sizes), sizes
    assert scores[-1] >= 40.0, scores


def test_archive_settings_decode_to_16_bits_as_libraw_renders_them(archived, tiny_weights):
    data = list(archived.values())[-1]
    eight = api.decode(data, model=tiny_weights, device="cpu")
    sixteen = api.decode(data, model=tiny_weights, device="cpu", bits=16)
    assert sixteen.dtype == np.uint16 and sixteen.shape == eight.shape
    assert np.array_equal(sixteen >> 8, eight)  # LibRaw's 8-bit output is the 16-bit one's top byte


def test_archive_files_are_format_4_and_say_what_they_hold(archived):
    (base, plain), *layered = archived.items()
    assert bitstream.parse(plain).version in (6, 7, 8) and "archive" not in api.info(plain)
    for q, data in layered:
        f, d = bitstream.parse(data), api.info(data)
        assert f.version == 4 and f.quality == q and f.archive_base == base
        assert d["quality"] == q and d["archive"]["step"] == f"1/{2 ** f.archive_shift}"
        assert d["streams"]["archive"] == len(f.archive) > 0
        assert len(data) == bitstream.HEADER_SIZES[4] + len(f.exif) + len(f.z) + len(f.y_anchor) + len(f.y_rest) + len(f.archive) + 4


def _refused(data: bytes, model, match: str) -> None:
    with pytest.raises(RawbitError) as e:
        api.decode(data, model=model, device="cpu", name="photo.rbit")
    msg = str(e.value)
    assert msg.startswith("photo.rbit: ") and "\n" not in msg and match in msg, msg


@pytest.mark.parametrize("damage", ["flipped", "truncated", "scales", "empty", "predictor", "scale index", "tail"])
def test_a_damaged_archive_layer_is_a_one_line_refusal(archived, tiny_weights, damage):
    f = bitstream.parse(list(archived.values())[-1])
    a = bytearray(f.archive)
    if damage == "flipped":
        a[len(a) // 2] ^= 0x5A
    elif damage == "truncated":
        a = a[: len(a) - 8]
    elif damage == "scales":
        a[4:8] = b"\xff\xff\xff\xff"
    elif damage == "predictor":
        n = int.from_bytes(a[:4], "big")
        a[4 + n : 8 + n] = np.array([np.nan], dtype=">f4").tobytes()
    elif damage == "scale index":
        import zlib

        n = int.from_bytes(a[:4], "big")
        scales = bytearray(zlib.decompress(bytes(a[4 : 4 + n])))
        scales[0] = 64
        packed = zlib.compress(bytes(scales))
        a = bytearray(len(packed).to_bytes(4, "big")) + packed + a[4 + n :]
    elif damage == "tail":
        a += b"\0\0\0\0"
    else:
        a = a[:8]
    bad = bitstream.build(dataclasses.replace(f, archive=bytes(a)))  # a valid checksum over bad bytes
    _refused(bad, tiny_weights, "archive layer")


def test_archive_header_fields_out_of_range_are_a_damaged_file(archived, tiny_weights):
    data = list(archived.values())[-1]
    f = bitstream.parse(data)
    for fields, why in [
        (dict(archive_shift=0), "archive step"),
        (dict(archive_shift=bitstream.MAX_ARCHIVE_SHIFT + 1), "archive step"),
        (dict(archive_base=f.quality), "archive layer over rate point"),
        (dict(archive_base=0), "archive layer over rate point"),
        (dict(cam_to_srgb=[1, 0, 0, 1, 0, 0, 0, 0, 1]), "cannot be inverted"),  # two equal rows
        (dict(cam_to_srgb=[1, 0, 0, 0, 1e-3, 0, 0, 0, 1]), "cannot be inverted"),  # inverse out of range
    ]:
        with pytest.raises(BitstreamError, match=why):
            bitstream.parse(bitstream.rewrite_header(data, **fields))


@needs_shared
@pytest.mark.skipif(DEFAULT_MODEL not in list_models(), reason="no shipped default model")
@pytest.mark.parametrize("path", shared_files("raw") + shared_files("raw-more"), ids=lambda p: p.name)
def test_the_default_models_top_archive_setting_reaches_40_db_on_every_real_raw(path):
    top = api.model_qualities()[-1]
    data = api.encode(path, quality=top, device="cpu")
    assert psnr(api.decode(data, device="cpu"), api.reference(path)) >= 40.0
