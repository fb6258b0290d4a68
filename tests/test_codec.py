"""The codec's promises: exact files, reproducible pixels, the reference's size and orientation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SAMPLE_DNG, needs_shared, shared_files, write_test_dng
from rawbit import api, bitstream
from rawbit.metrics import psnr as _psnr
from rawbit.nets.registry import load_model


def _decode_with_threads(data: bytes, model, threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return api.decode(data, model=model, device="cpu")
    finally:
        torch.set_num_threads(before)


def check_round_trip(path, model, again: bool = True) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Encode at quality 4, decode; the file's bytes and the photo's shape as promised. `again`:
    decoding twice and on one thread gives the same pixels."""
    data = api.encode(path, model=model, quality=min(4, len(api.model_qualities(model))), device="cpu")
    f = bitstream.parse(data)
    # The file is exactly header + EXIF + streams + CRC, and rebuilding it gives the same bytes.
    streams = len(f.z) + len(f.y_anchor) + len(f.y_rest) + len(f.correction) + len(f.detail) + len(f.loop)
    assert len(data) == bitstream.HEADER_SIZES[f.version] + len(f.exif) + streams + 4
    assert bitstream.build(f) == data
    ref = api.reference(path)
    first = _decode_with_threads(data, model, 2)
    assert first.shape == ref.shape and first.dtype == np.uint8
    if again:
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
    best = load_model(quality_weights).model.n_rates  # the learned decoder's own best, no archive layer
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

    with pytest.raises(RawbitError, match="quality 99 is out of range: this model has rate points 1 to 6, detail settings 7 to 12 and archive settings 13 to 14"):
        api.encode(SAMPLE_DNG, model=tiny_weights, quality=99, device="cpu")


@needs_shared
@pytest.mark.parametrize("path", shared_files("raw") + shared_files("raw-more"), ids=lambda p: p.name)
def test_every_real_raw_decodes_to_exactly_its_reference_size(path, quality_weights):
    """Whatever the CFA phase (the Kodak DC50 is GRBG), the decoded photo is LibRaw's rendering's
    size: check_round_trip compares the shapes. Reproducibility is the next test's: three decodes
    of every real photo would cost minutes."""
    out, ref, data = check_round_trip(path, quality_weights, again=False)
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    if DEFAULT_MODEL in list_models():  # the stand-in trained on one photo knows no real camera
        # Only a broken pipeline (misaligned crop, wrong colours) falls under the mean-colour image.
        flat = np.broadcast_to(ref.reshape(-1, 3).mean(0).round().astype(np.uint8), ref.shape)
        assert _psnr(out, ref) > _psnr(flat, ref) + 3.0


@needs_shared
def test_a_real_photo_decodes_identically_twice_and_on_one_thread(quality_weights):
    """The shipped model's pixels do not depend on the run or the thread count, on the smallest
    real RAW file (the sample and a multi-tile photo check the same with the tiny model)."""
    smallest = min(shared_files("raw") + shared_files("raw-more"), key=lambda p: p.stat().st_size)
    check_round_trip(smallest, quality_weights)


def test_probability_path_in_parallel_bands_computes_what_the_whole_latent_does(tiny_weights):
    """Format-2 files decode with the context model in row bands; a wrong halo would lose them."""
    from rawbit.nets.probability import LEGACY_BAND_ROWS as BAND_ROWS, float32_path_in_bands
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
            with float32_path_in_bands(model):
                banded = codec.context_prediction(y), codec.entropy_parameters(params)
            after = codec.context_prediction(y)  # the modules are themselves again afterwards
    finally:
        torch.set_num_threads(before)
    for a, b in zip(whole, banded):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert "forward" not in vars(codec.context_prediction) and torch.equal(after, whole[0])


def test_the_encoders_tiled_analysis_gives_the_latent_of_one_pass(tmp_path, tiny_weights):
    """The encoder runs g_a over tiles with a halo, in parallel; every latent value must be the one a
    single pass over the whole photo gives, at tile edges, at the photo's edges and on any thread count."""
    from rawbit.raw import read_raw

    model = load_model(tiny_weights).model
    raw = read_raw(write_test_dng(tmp_path / "odd.dng", height=330, width=458))
    x = model.pad(torch.from_numpy(raw.packed).unsqueeze(0))
    wb, ccm = codec._colour_tensors(raw.meta.wb, raw.meta.cam_to_srgb)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        whole = model.analyze(x, wb, ccm)
        small_tiles = 3 * model.config.latent_stride  # 3 x 3 latent cells: most are edges, the last short
        before = torch.get_num_threads()
        try:
            tiled = []
            for threads in (2, 1):
                torch.set_num_threads(threads)
                tiled.append(codec.analyze_tiled(model, x, cpu, wb, ccm, tile_px=small_tiles))
        finally:
            torch.set_num_threads(before)
    assert whole.shape == tiled[0].shape and whole.shape[-1] > 4
    for y in tiled:
        assert torch.allclose(y, whole, rtol=0, atol=1e-5 * float(whole.abs().max()))
    assert torch.equal(tiled[0], tiled[1])


def test_the_encoders_latent_is_exactly_what_the_decoder_rebuilds(tiny_weights):
    """An archive encode takes its residual against the photo synthesised from the latent the
    encoder quantised; the decoder must rebuild that latent bit for bit from the streams."""
    model = load_model(tiny_weights).model
    torch.manual_seed(3)
    y = torch.randn(1, model.config.latent_channels, 8, 12) * 5
    with torch.inference_mode():
        streams, size, y_hat = model.compress_latent(y, 1, y_hat=True)
        rebuilt = model.decompress_latent(streams, size, 1)
    assert y_hat.dtype == rebuilt.dtype == torch.float32
    assert torch.equal(y_hat, rebuilt) and not torch.equal(y_hat, y)


# --- decoding refuses, never crashes: every error one line, naming the file, no CLI flags ----------

from rawbit import codec, rans  # noqa: E402
from rawbit.errors import BitstreamError, ModelError, RawbitError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_file(tiny_weights, tmp_path_factory) -> bytes:
    dng = write_test_dng(tmp_path_factory.mktemp("decode") / "small.dng", height=64, width=96, seed=1)
    return api.encode(dng, model=tiny_weights, quality=1, device="cpu")


def _refused(data: bytes, model, match: str, **kw) -> str:
    with pytest.raises(RawbitError) as e:
        api.decode(data, model=model, device="cpu", name="photo.rbit", **kw)
    msg = str(e.value)
    assert msg.startswith("photo.rbit: ") and "\n" not in msg and "--" not in msg, msg
    assert match in msg, msg
    return msg


def test_encoded_files_are_format_6_with_the_photos_colour(tiny_file, tiny_weights):
    from rawbit.raw import read_raw

    f = bitstream.parse(tiny_file)
    assert f.version in (6, 8) and len(f.wb) == 4 and len(f.cam_to_srgb) == 9 and not f.detail
    assert f.wb[1] == 1.0  # gains as LibRaw gives them, smallest 1
    assert api.info(tiny_file)["white_balance"] == pytest.approx(list(f.wb), abs=1e-5)
    meta = read_raw(SAMPLE_DNG).meta
    data = api.encode(SAMPLE_DNG, model=tiny_weights, quality=1, device="cpu")
    g = bitstream.parse(data)
    assert g.wb == pytest.approx(meta.wb, rel=1e-6)
    assert g.cam_to_srgb == pytest.approx([v for row in meta.cam_to_srgb for v in row], rel=1e-6, abs=1e-7)


def test_quality_byte_out_of_range_is_a_damaged_file(tiny_file, tiny_weights):
    n = load_model(tiny_weights).model.n_rates
    bad = bitstream.rewrite_header(tiny_file, quality=n + 1)
    msg = _refused(bad, tiny_weights, "damaged")
    assert msg == f"photo.rbit: damaged .rbit file (rate point {n + 1}, this model has 1..{n})"
    _refused(bitstream.rewrite_header(tiny_file, quality=0), tiny_weights, "damaged .rbit file (rate point 0")


def test_format_version_0_is_a_damaged_file(tiny_file, tiny_weights):
    bad = bytearray(tiny_file)
    bad[4] = 0
    msg = _refused(bytes(bad), tiny_weights, "damaged")
    assert msg == "photo.rbit: damaged .rbit file (format version 0)"


def test_latent_size_of_another_stride_is_a_damaged_file(tiny_file, tiny_weights):
    f = bitstream.parse(tiny_file)
    # 64x96 at stride 16 (the tiny model's is 32): consistent for the container, not for this model.
    bad = bitstream.rewrite_header(tiny_file, latent_height=4, latent_width=8)
    assert f.latent_size != (4, 8)
    _refused(bad, tiny_weights, "this model codes it as")


@pytest.mark.parametrize("streams", [
    dict(y_anchor=b""), dict(y_rest=b""), dict(z=b""), dict(z=b"", y_anchor=b"", y_rest=b""),
    "anchor-4", "z-into-anchor", "swap", "extra-word",
], ids=str)  # fmt: skip
def test_empty_and_resplit_streams_are_damaged_streams(tiny_file, tiny_weights, streams):
    import dataclasses

    f = bitstream.parse(tiny_file)
    y = f.y_anchor + f.y_rest
    kw = streams if isinstance(streams, dict) else {
        "anchor-4": dict(y_anchor=y[:4], y_rest=y[4:]),
        "z-into-anchor": dict(z=f.z[:-4], y_anchor=f.z[-4:] + f.y_anchor),
        "swap": dict(y_anchor=f.y_rest, y_rest=f.y_anchor),
        "extra-word": dict(y_rest=f.y_rest + b"\0\0\0\0"),
    }[streams]
    bad = bitstream.build(dataclasses.replace(f, **kw))
    _refused(bad, tiny_weights, "damaged .rbit stream")


def test_the_rans_guard_checks_streams_before_and_after_decoding(tiny_weights):
    from rawbit.nets.registry import load_model

    gc = load_model(tiny_weights).model.latent_codec["y"]["y"].gaussian_conditional
    tables = gc._quantized_cdf.tolist(), gc._cdf_length.tolist(), gc._offset.tolist()
    rng = np.random.default_rng(0)
    symbols = rng.integers(-3, 4, 500).tolist()
    indexes = rng.integers(0, len(tables[0]), 500).tolist()
    coder = gc.entropy_coder
    stream = coder.encode_with_indexes(symbols, indexes, *tables)
    assert rans.rans_decode(coder, stream, indexes, *tables).tolist() == symbols
    for bad, why in [(b"", "shortest"), (stream[:4], "shortest"), (stream[:-1], "whole 32-bit words"),
                     (stream * 40, "at most 4 bytes a symbol"), (stream + bytes(4), "not consumed exactly"),
                     (stream[:-4], "not consumed exactly"), (b"\xff" * len(stream), "")]:  # fmt: skip
        with pytest.raises(rans.StreamError, match=why or None):
            rans.rans_decode(coder, bad, indexes, *tables)


def test_a_stream_that_decodes_to_non_finite_values_is_a_damaged_stream(tiny_file, tiny_weights):
    """A valid rANS stream whose latent holds a value far past anything an encoder produces: the
    synthesis overflows; the decoder says so instead of writing NaN pixels into a PNG."""
    from rawbit.nets.registry import load_model

    f = bitstream.parse(tiny_file)
    model = load_model(tiny_weights).model
    y = torch.zeros(1, model.config.latent_channels, *f.latent_size)
    y[0, :4, 1:3, 1:3] = 1e5
    with torch.inference_mode():
        (anchor, rest, z), _ = model.compress_latent(y, 0)
    import dataclasses

    bad = bitstream.build(dataclasses.replace(f, y_anchor=anchor, y_rest=rest, z=z))
    _refused(bad, tiny_weights, "damaged .rbit stream (the decoder's output is not finite)")


def test_non_finite_synthesis_is_caught_whatever_the_model(tiny_file, tiny_weights, monkeypatch):
    from rawbit.nets import RBN

    monkeypatch.setattr(RBN, "synthesize", lambda self, y, *a, **k: torch.full((1, 3, y.shape[2] * 32, y.shape[3] * 32), float("nan")))
    _refused(tiny_file, tiny_weights, "damaged .rbit stream (the decoder's output is not finite)")


def test_pixel_limit_is_checked_before_decoding(tiny_file, tiny_weights):
    _refused(tiny_file, tiny_weights, "over the decoder's limit of 1000 pixels", max_pixels=1000)
    assert api.decode(tiny_file, model=tiny_weights, device="cpu", max_pixels=None).shape == (64, 96, 3)
    assert bitstream.DEFAULT_MAX_PIXELS == api.DEFAULT_MAX_PIXELS == 2**28


def test_colour_metadata_reaches_the_synthesis_transform(tiny_file, tiny_weights, monkeypatch):
    from rawbit.nets import RBN

    seen = []
    original = RBN.synthesize

    def spy(self, y_hat, *args, **kwargs):
        seen.append(kwargs)
        return original(self, y_hat, *args, **kwargs)

    monkeypatch.setattr(RBN, "synthesize", spy)
    api.decode(tiny_file, model=tiny_weights, device="cpu")
    f = bitstream.parse(tiny_file)
    wb, ccm = seen[0]["wb"], seen[0]["cam_to_srgb"]
    assert wb.shape == (1, 4) and ccm.shape == (1, 3, 3) and wb.dtype == ccm.dtype == torch.float32
    assert wb[0].tolist() == list(f.wb) and ccm.flatten().tolist() == list(f.cam_to_srgb)


def test_format_1_files_decode_like_format_2_and_need_no_colour(tiny_file, tiny_weights, monkeypatch):
    import dataclasses

    from rawbit.nets import RBN

    f = bitstream.parse(tiny_file)
    v1 = bitstream.build(dataclasses.replace(f, version=1, wb=None, cam_to_srgb=None))
    assert v1[4] == 1
    assert np.array_equal(api.decode(v1, model=tiny_weights, device="cpu"),
                          api.decode(tiny_file, model=tiny_weights, device="cpu"))  # fmt: skip
    monkeypatch.setattr(RBN, "needs_colour", property(lambda self: True), raising=False)
    _refused(v1, tiny_weights, "needs the photo's colour metadata")


def _old_format_decodes_or_is_refused(fixture, min_psnr: float) -> None:
    """Formats 1-2 were coded with compressai's float32 probability path, which decodes only where
    the float arithmetic matches the writer's: sample-v1.rbit, written in an earlier session on
    another machine, no longer decodes on this one (AVX-512). What must hold on any machine: the
    photo, or the one-line "damaged .rbit stream" refusal; never garbage pixels or a crash."""
    from rawbit.errors import BitstreamError
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    if DEFAULT_MODEL not in list_models():
        pytest.skip("no shipped default model")
    try:
        out = api.decode(fixture, device="cpu")
    except BitstreamError as e:
        assert "damaged .rbit stream" in str(e) and "\n" not in str(e)
        return
    ref = api.reference(SAMPLE_DNG)
    assert out.shape == ref.shape and _psnr(out, ref) > min_psnr


def test_shipped_format_1_file_is_still_read():
    """tests/data/sample-v1.rbit: examples/sample.dng at rate point 1, written by the format-1 code
    and the shipped model under its legacy id, which still finds the model."""
    from pathlib import Path

    fixture = Path(__file__).parent / "data" / "sample-v1.rbit"
    f = bitstream.parse(fixture.read_bytes())
    assert f.version == 1 and f.wb is None and f.model_id == "6de41b2b5f9ffbdd5813a9914d7445ff"
    _old_format_decodes_or_is_refused(fixture, min_psnr=20.0)


def test_shipped_format_2_file_is_still_read():
    """tests/data/sample-v2.rbit: examples/sample.dng at rate point 3, written by the format-2 code
    with the shipped model (24.10 dB on the machine that wrote it; this code decodes it there to the
    same pixels as the format-2 code did)."""
    from pathlib import Path

    fixture = Path(__file__).parent / "data" / "sample-v2.rbit"
    f = bitstream.parse(fixture.read_bytes())
    assert f.version == 2 and f.pad == (0, 0) and len(f.wb) == 4
    _old_format_decodes_or_is_refused(fixture, min_psnr=23.5)


def test_shipped_format_3_file_decodes_on_any_machine():
    """tests/data/sample-v3.rbit, written by this format's encoder: its probability path is exact,
    so wherever the tests run the streams decode and are consumed exactly as they were written
    (the rANS guard re-encodes them), and the photo comes back."""
    from pathlib import Path

    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    fixture = Path(__file__).parent / "data" / "sample-v3.rbit"
    f = bitstream.parse(fixture.read_bytes())
    assert f.version == 3
    if DEFAULT_MODEL not in list_models():
        pytest.skip("no shipped default model")
    out = api.decode(fixture, device="cpu")
    ref = api.reference(SAMPLE_DNG)
    assert out.shape == ref.shape and _psnr(out, ref) > 23.5


@pytest.mark.parametrize("cfa, height, width", [("RGGB", 63, 95), ("GRBG", 64, 96), ("GBRG", 65, 94), ("BGGR", 63, 97)])
def test_every_cfa_phase_and_odd_size_decodes_to_the_reference_size(tmp_path, tiny_weights, cfa, height, width):
    """Nothing of the photo is cut: the mosaic is padded to RGGB for coding and cropped back."""
    from rawbit.data.dng import write_dng

    rng = np.random.default_rng(0)
    path = tmp_path / f"{cfa}.dng"
    write_dng(path, rng.integers(600, 4000, (height, width)).astype(np.uint16), cfa=cfa, black_level=512,
              white_level=4095, as_shot_neutral=[0.5, 1.0, 0.7], color_matrix=np.eye(3), orientation=6)  # fmt: skip
    data = api.encode(path, model=tiny_weights, quality=1, device="cpu")
    out = api.decode(data, model=tiny_weights, device="cpu")
    assert out.shape == api.reference(path).shape == (width, height, 3)  # orientation 6 turns it
    assert api.info(data)["width"] == height and api.info(data)["height"] == width


# --- models you can trust ------------------------------------------------------------------------


def _rewrite_weights(src, dst, **meta_changes):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def _config(path) -> dict:
    import json

    from rawbit.nets.weights import read_metadata

    return json.loads(read_metadata(path)["config"])


def test_explicit_model_is_used_and_refuses_another_models_file(tiny_file, tiny_weights, tmp_path):
    from rawbit.nets import create_model
    from rawbit.nets.weights import export

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    other_id = export(create_model("rbn-tiny"), other)
    msg = _refused(tiny_file, other, "not with the model given to decode it")
    assert bitstream.parse(tiny_file).model_id in msg and other_id in msg


def test_a_bad_explicit_model_file_is_not_silently_ignored(tiny_file, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights at all")
    with pytest.raises(ModelError, match="bad.safetensors: not a rawbit weights file"):
        api.decode(tiny_file, model=bad, device="cpu")


def test_model_id_covers_tensors_and_configuration(tiny_file, tiny_weights, tmp_path):
    import json

    from rawbit.nets import weights

    ids = weights.identify(tiny_weights)
    assert ids.model_id == weights.model_hash(ids.legacy_id, _config(tiny_weights)) != ids.legacy_id
    edited = dict(_config(tiny_weights), input="plain")  # same tensors, another network
    # Recorded id kept: the file no longer matches it.
    forged = _rewrite_weights(tiny_weights, tmp_path / "forged.safetensors", config=json.dumps(edited))
    with pytest.raises(ModelError, match="recorded model id does not match"):
        api.decode(tiny_file, model=forged, device="cpu")
    # Ids recomputed: a model of its own, which refuses the real model's files.
    new_id = weights.model_hash(ids.legacy_id, edited)
    honest = _rewrite_weights(tiny_weights, tmp_path / "edited.safetensors", config=json.dumps(edited), model_id=new_id)
    assert weights.load(honest)[1] == new_id != ids.model_id
    _refused(tiny_file, honest, "not with the model given to decode it")


@pytest.mark.parametrize("config,why", [
    ("{not json", "configuration is not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"latent_channels": 48}', "does not rebuild its tensors"),
    ('{"dec_channels": [32, 32, 24, 16, 8, 4]}', "does not build a network"),
    ('{"no_such_field": 1}', "does not describe an RBN"),
    ('{"enc_channels": 100000000}', "sizes out of range"),
], ids=["not-json", "not-object", "latent", "levels", "unknown-key", "huge"])  # fmt: skip
def test_a_configuration_that_does_not_rebuild_its_tensors_is_one_line(tiny_weights, tmp_path, config, why):
    import json

    from rawbit.nets import weights

    try:
        merged = json.dumps(dict(_config(tiny_weights), **json.loads(config)))
    except (json.JSONDecodeError, TypeError):
        merged = config
    ids = weights.identify(tiny_weights)
    try:
        new_id = weights.model_hash(ids.legacy_id, json.loads(merged))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        new_id = ids.model_id
    bad = _rewrite_weights(tiny_weights, tmp_path / "bad.safetensors", config=merged, model_id=new_id)
    with pytest.raises(ModelError) as e:
        weights.load(bad)
    assert why in str(e.value) and "\n" not in str(e.value) and str(bad) in str(e.value)


def test_legacy_ids_of_format_1_weights(tiny_file, tiny_weights, tmp_path, monkeypatch):
    """Weights written before ids covered the configuration (format 1: tensors hash only) load under
    the new id; a format-1 .rbit file carrying the legacy id decodes with them. For a shipped model
    (its legacy id pinned in SHIPPED_LEGACY_IDS) only with the very model, not an edited copy."""
    import dataclasses
    import json

    from rawbit.nets import weights

    ids = weights.identify(tiny_weights)
    old = _rewrite_weights(tiny_weights, tmp_path / "old.safetensors", format=weights.LEGACY_FORMAT,
                           model_id=ids.legacy_id, tensors_id=None)  # fmt: skip
    assert weights.load(old)[1] == ids.model_id
    f = bitstream.parse(tiny_file)
    v1 = bitstream.build(dataclasses.replace(f, version=1, wb=None, cam_to_srgb=None, model_id=ids.legacy_id))
    v2_legacy = bitstream.build(dataclasses.replace(f, model_id=ids.legacy_id))
    assert api.decode(v1, model=old, device="cpu").shape == (64, 96, 3)
    _refused(v2_legacy, old, "not with the model given")  # format 2 carries the new id only
    edited = _rewrite_weights(old, tmp_path / "old-edited.safetensors",
                              config=json.dumps(dict(_config(old), input="plain")))  # fmt: skip
    assert weights.load(edited)[1] != ids.model_id
    monkeypatch.setitem(weights.SHIPPED_LEGACY_IDS, ids.legacy_id, ids.model_id)
    assert api.decode(v1, model=old, device="cpu").shape == (64, 96, 3)
    _refused(v1, edited, "not with the model given")


def test_the_model_of_the_format_1_files_ships_and_keeps_its_legacy_id():
    """Format-1 files name their model by a legacy id; the model that wrote them (rbn-lite-v5,
    the default until 2026-12-03) still ships, so they still find it."""
    from rawbit.nets import weights
    from rawbit.nets.registry import list_models

    if not list_models():
        pytest.skip("no shipped models")
    legacy = {}
    for path in list_models().values():
        ids = weights.identify(path)
        if ids.legacy_id in weights.SHIPPED_LEGACY_IDS:
            legacy[ids.legacy_id] = (ids.model_id, weights.load(path)[1])
    assert legacy, "no shipped model wrote the format-1 files"
    for legacy_id, (model_id, loaded_id) in legacy.items():
        assert weights.SHIPPED_LEGACY_IDS[legacy_id] == model_id == loaded_id
