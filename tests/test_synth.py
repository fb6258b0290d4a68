"""Synthetic DNG writing and unprocessing: rawpy round trips, CFA phases, fidelity, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import rawpy

from rawbit.data.dng import CFA_PATTERNS, write_dng
from rawbit.data.synth import synthesize_dng, synthesize_folder
from rawbit.errors import RawReadError
from rawbit.raw import pad_mosaic, read_raw
from rawbit.metrics import psnr as _psnr
from rawbit.render import reference_rendering

_MATRIX = [[0.6722, -0.0635, -0.0963], [-0.4287, 1.2460, 0.2028], [-0.0908, 0.2162, 0.5668]]
_LIBRAW_COLOR = {"R": 0, "G": 1, "B": 2}


def _mosaic(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(600, 4000, (h, w)).astype(np.uint16)


def _photo(h: int = 64, w: int = 96) -> np.ndarray:
    """A smooth, in-gamut colour image: demosaicking and clipping barely touch it."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([40 + 150 * x, 60 + 120 * y, 180 - 100 * x * y], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def test_write_dng_round_trip_through_rawpy(tmp_path):
    path = tmp_path / "a.dng"
    mosaic = _mosaic()
    write_dng(path, mosaic, cfa="GRBG", black_level=512, white_level=4095,
              as_shot_neutral=[0.5, 1.0, 0.8], color_matrix=_MATRIX, orientation=6)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat
        colors = [_LIBRAW_COLOR[c] for c in "GRBG"]
        seen = [{0: 0, 1: 1, 2: 2, 3: 1}[int(c)] for c in raw.raw_colors_visible[:2, :2].reshape(-1)]
        assert seen == colors  # LibRaw numbers the second green 3
        assert list(raw.black_level_per_channel) == [512] * 4
        assert raw.white_level == 4095
        np.testing.assert_array_equal(raw.raw_image_visible, mosaic)
        wb = np.asarray(raw.camera_whitebalance[:3])
        np.testing.assert_allclose(wb / wb[1], [2.0, 1.0, 1.25], rtol=1e-4)
        assert raw.sizes.flip == 6  # TIFF orientation 6 (rotate 90 CW) is LibRaw flip 6
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=8, user_flip=0)
    assert rgb.shape == (64, 96, 3) and 10 < rgb.mean() < 245


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_all_cfa_phases_pack_to_rggb(tmp_path, cfa):
    path = tmp_path / f"{cfa}.dng"
    black, white = 512, 4095
    mosaic = _mosaic(63, 95)  # odd sizes too: the photo must come back whole
    write_dng(path, mosaic, cfa=cfa, black_level=black, white_level=white,
              as_shot_neutral=[0.5, 1.0, 0.7], color_matrix=_MATRIX)
    image = read_raw(path)
    assert image.meta.cfa == cfa
    top, left = image.pad
    assert image.size == mosaic.shape  # nothing of the photo is cut
    assert image.coded_size == (64, 96)  # padded to start on red and to even sizes
    padded = pad_mosaic(mosaic, image.pad)
    expected = (padded.astype(np.float32) - black) / (white - black)
    for i, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.testing.assert_allclose(image.packed[i], expected[dy::2, dx::2], atol=1e-6)
    assert reference_rendering(path).shape[:2] == image.size


@pytest.mark.parametrize("noise, threshold", [(False, 50.0), (True, 24.0)])
def test_synthesized_dng_renders_close_to_its_source(tmp_path, noise, threshold):
    # Measured on this image over seeds 0-9: 55.4-56.3 dB without noise, 26.6-40.3 dB with
    # (the noise level is drawn per image).
    photo = _photo()
    path = tmp_path / "s.dng"
    params = synthesize_dng(photo, path, seed=3, noise=noise)
    assert params["size"] == (96, 64)
    assert _psnr(reference_rendering(path), photo) > threshold


def test_synthesize_dng_is_deterministic_and_keeps_even_size(tmp_path):
    photo = _photo(63, 95)
    a, b = tmp_path / "a.dng", tmp_path / "b.dng"
    pa = synthesize_dng(photo, a, seed=7, cfa="BGGR")
    pb = synthesize_dng(photo, b, seed=7, cfa="BGGR")
    assert pa == pb and a.read_bytes() == b.read_bytes()
    with rawpy.imread(str(a)) as raw:
        assert raw.raw_image_visible.shape == (62, 94)
    assert read_raw(a).meta.cfa == "BGGR"


def test_synthesize_folder_skips_existing(tmp_path):
    from PIL import Image

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("b.png", "a.png"):
        Image.fromarray(_photo()).save(src / name)
    first = synthesize_folder(src, out, seed=1, progress=False)
    assert [p.name for p in first] == ["a.dng", "b.dng"]
    mtime = first[0].stat().st_mtime_ns
    assert synthesize_folder(src, out, seed=1, progress=False) == first
    assert first[0].stat().st_mtime_ns == mtime


def test_truncated_dng_is_rejected(tmp_path):
    path = tmp_path / "t.dng"
    synthesize_dng(_photo(), path, seed=0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # LibRaw reports the short strip as an I/O error (it does not return silent garbage).
    with pytest.raises(RawReadError):
        read_raw(path)
    with pytest.raises(RawReadError):
        reference_rendering(path)
