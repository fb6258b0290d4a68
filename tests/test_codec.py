"""The codec's promises: exact files, reproducible pixels, the reference's size and orientation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SAMPLE_DNG, needs_shared, shared_files, write_test_dng
from rawbit import api, bitstream
from rawbit.bench.metrics import psnr as _psnr


def _decode_with_threads(data: bytes, model, threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return api.decode(data, model=model, device="cpu")
    finally:
        torch.set_num_threads(before)


def check_round_trip(path, model) -> tuple[np.ndarray, np.ndarray, bytes]:
    data = api.encode(path, model=model, quality=min(4, len(api.model_qualities(model))), device="cpu")
    f = bitstream.parse(data)
    # The file is exactly header + EXIF + streams + CRC, and rebuilding it gives the same bytes.
    assert len(data) == bitstream.HEADER_SIZE + len(f.exif) + len(f.z) + len(f.y_anchor) + len(f.y_rest) + 4
    assert bitstream.build(f) == data
    ref = api.reference(path)
    first = _decode_with_threads(data, model, 2)
    assert first.shape == ref.shape and first.dtype == np.uint8
    assert np.array_equal(first, _decode_with_threads(data, model, 2)), "decoding twice differs"
    assert np.array_equal(first, _decode_with_threads(data, model, 1)), "1 vs 2 threads differ"
    return first, ref, data


def test_sample_round_trip_is_exact_and_reproducible(tiny_weights):
    check_round_trip(SAMPLE_DNG, tiny_weights)


def test_multi_tile_photo_decodes_identically_on_any_thread_count(tmp_path, tiny_weights):
    dng = write_test_dng(tmp_path / "wide.dng", height=1200, width=2200)  # several 1024px tiles
    check_round_trip(dng, tiny_weights)


@pytest.mark.parametrize("cfa", ["GRBG", "GBRG", "BGGR"])
def test_every_bayer_phase_round_trips_at_reference_size(tmp_path, tiny_weights, cfa):
    dng = write_test_dng(tmp_path / f"{cfa}.dng", height=130, width=194, cfa=cfa)
    data = api.encode(dng, model=tiny_weights, device="cpu")
    assert api.decode(data, model=tiny_weights, device="cpu").shape == api.reference(dng).shape


def test_trained_model_reconstructs_the_reference(quality_weights):
    """Real quality, not a golden hash: a PSNR window and the header's bpp against the file size."""
    best = api.model_qualities(quality_weights)[-1]
    data = api.encode(SAMPLE_DNG, model=quality_weights, quality=best, device="cpu")
    out = api.decode(data, model=quality_weights, device="cpu")
    ref = api.reference(SAMPLE_DNG)
    # Whatever the model, it must reproduce structure: far better than the photo's mean colour.
    flat = np.broadcast_to(ref.reshape(-1, 3).mean(0).round().astype(np.uint8), ref.shape)
    assert _psnr(out, ref) > _psnr(flat, ref) + 3.0
    h, w, _ = ref.shape
    assert api.info(data)["bpp"] == pytest.approx(len(data) * 8 / (h * w))


def test_shipped_default_model_quality():
    """The shipped model at its best rate point renders the sample close to LibRaw."""
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    if DEFAULT_MODEL not in list_models():
        pytest.skip("no shipped default model")
    data = api.encode(SAMPLE_DNG, quality=7, device="cpu")
    assert _psnr(api.decode(data, device="cpu"), api.reference(SAMPLE_DNG)) > 24.0


def test_higher_quality_spends_more_bits(quality_weights):
    sizes = [len(api.encode(SAMPLE_DNG, model=quality_weights, quality=q, device="cpu"))
             for q in api.model_qualities(quality_weights)]  # fmt: skip
    assert sizes[-1] > sizes[0]


def test_quality_out_of_range_is_an_error(tiny_weights):
    from rawbit.errors import RawbitError

    with pytest.raises(RawbitError, match="--quality"):
        api.encode(SAMPLE_DNG, model=tiny_weights, quality=99, device="cpu")


@needs_shared
@pytest.mark.parametrize("path", shared_files("raw"), ids=lambda p: p.name)
def test_real_raw_round_trip(path, quality_weights):
    out, ref, data = check_round_trip(path, quality_weights)
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    if DEFAULT_MODEL in list_models():  # the stand-in trained on one photo knows no real camera
        # Only a broken pipeline (misaligned crop, wrong colours) falls under the mean-colour image.
        flat = np.broadcast_to(ref.reshape(-1, 3).mean(0).round().astype(np.uint8), ref.shape)
        assert _psnr(out, ref) > _psnr(flat, ref) + 3.0


def test_probability_path_in_parallel_bands_computes_what_the_whole_latent_does(tiny_weights):
    """Encode and decode run the context model in row bands; a wrong halo would cost bits silently."""
    from rawbit.codec import BAND_ROWS, _probability_path
    from rawbit.nets.registry import load_model

    model = load_model(tiny_weights).model
    codec = model.latent_codec["y"]
    m = model.config.latent_channels
    y = torch.randn(1, m, 3 * BAND_ROWS + 5, 24) * 4
    params = torch.randn(1, 4 * m, 3 * BAND_ROWS + 5, 12)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            whole = codec.context_prediction(y), codec.entropy_parameters(params)
            with _probability_path(model):
                banded = codec.context_prediction(y), codec.entropy_parameters(params)
            after = codec.context_prediction(y)  # the modules are themselves again afterwards
    finally:
        torch.set_num_threads(before)
    for a, b in zip(whole, banded):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert "forward" not in vars(codec.context_prediction) and torch.equal(after, whole[0])
