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

from rawbit import api, archive, bitstream, isp
from rawbit.codec import _learned_photo
from rawbit.errors import BitstreamError, RawbitError
from rawbit.metrics import psnr
from rawbit.nets.registry import DEFAULT_MODEL, list_models, load_model
from rawbit.raw import read_raw
from rawbit.render import reference_rendering, render_planes

from conftest import SAMPLE_DNG, needs_shared, shared_files, write_test_dng


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


@pytest.fixture(scope="module")
def archived(tiny_weights) -> dict[int, bytes]:
    """The sample at the tiny model's best rate point and at each archive setting above it."""
    top = load_model(tiny_weights).model.n_rates
    return {q: api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu") for q in range(top, top + 4)}


def test_the_model_offers_archive_settings_above_its_rate_points(tiny_weights):
    n = load_model(tiny_weights).model.n_rates
    assert api.model_qualities(tiny_weights) == list(range(1, n + len(archive.SHIFTS) + 1))
    with pytest.raises(RawbitError, match=f"rate points 1 to {n} and archive settings {n + 1} to {n + 3}$"):
        api.encode(SAMPLE_DNG, model=tiny_weights, quality=n + 4, device="cpu")


def test_every_sensor_value_lies_within_half_a_step(archived, tiny_weights):
    loaded = load_model(tiny_weights)
    truth = isp.gamma_curve(torch.from_numpy(balanced_planes(SAMPLE_DNG)[0]))
    for q, data in list(archived.items())[1:]:
        f = bitstream.parse(data)
        photo = _learned_photo(f, loaded.model, torch.device("cpu"), "sample")
        ccm = torch.tensor(f.cam_to_srgb, dtype=torch.float32).reshape(3, 3)
        planes = archive.decode(f.archive, photo, ccm, f.archive_shift, f.coded_size)
        error = (isp.gamma_curve(planes) - truth).abs().max().item()
        assert error <= 2.0 ** -f.archive_shift / 2 + 1e-9, (q, error)


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
    assert np.abs((sixteen >> 8).astype(int) - eight).max() <= 1  # LibRaw's 8-bit output is the top byte


def test_archive_files_are_format_4_and_say_what_they_hold(archived):
    (top, plain), *layered = archived.items()
    assert bitstream.parse(plain).version == 3 and "archive" not in api.info(plain)
    for q, data in layered:
        f, d = bitstream.parse(data), api.info(data)
        assert f.version == 4 and f.quality == q and f.archive_base == top - archive.BASE_BELOW_TOP
        assert d["quality"] == q and d["archive"]["step"] == f"1/{2 ** f.archive_shift}"
        assert d["streams"]["archive"] == len(f.archive) > 0
        assert len(data) == bitstream.HEADER_SIZES[4] + len(f.exif) + len(f.z) + len(f.y_anchor) + len(f.y_rest) + len(f.archive) + 4


def _refused(data: bytes, model, match: str) -> None:
    with pytest.raises(RawbitError) as e:
        api.decode(data, model=model, device="cpu", name="photo.rbit")
    msg = str(e.value)
    assert msg.startswith("photo.rbit: ") and "\n" not in msg and match in msg, msg


@pytest.mark.parametrize("damage", ["flipped", "truncated", "scales", "empty"])
def test_a_damaged_archive_layer_is_a_one_line_refusal(archived, tiny_weights, damage):
    f = bitstream.parse(list(archived.values())[-1])
    a = bytearray(f.archive)
    if damage == "flipped":
        a[len(a) // 2] ^= 0x5A
    elif damage == "truncated":
        a = a[: len(a) - 8]
    elif damage == "scales":
        a[4:8] = b"\xff\xff\xff\xff"
    else:
        a = a[:8]
    bad = bitstream.build(dataclasses.replace(f, archive=bytes(a)))  # a valid checksum over bad bytes
    _refused(bad, tiny_weights, "archive layer")


def test_archive_header_fields_out_of_range_are_a_damaged_file(archived, tiny_weights):
    data = list(archived.values())[-1]
    f = bitstream.parse(data)
    for fields, why in [
        (dict(archive_shift=0), "archive step"),
        (dict(archive_base=f.quality), "archive layer over rate point"),
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
