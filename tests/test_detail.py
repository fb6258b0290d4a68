"""The detail settings: between the learned photo and the archive settings, a photographer buys
fidelity with bits. What must hold: the quality ladder is the learned points, then the detail
settings, then the archive settings; through the detail settings the file grows and the photo
nears the reference rendering, every coefficient's error bounded by the step; the files are
format 5 and say so; a damaged detail layer is a one-line refusal, never a traceback or a photo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rawbit import DEFAULT_EFFORT, EFFORTS, api, bitstream, correction, detail, ladder, laplace
from rawbit.errors import BitstreamError, RawbitError
from rawbit.metrics import psnr, rd_score
from rawbit.nets.registry import load_model

from conftest import SAMPLE_DNG, write_test_dng


def detail_qualities(weights) -> list[int]:
    """The detail settings above the learned points."""
    offered = ladder.settings(load_model(weights).model)
    return [q for q, s in enumerate(offered, 1) if s.detail_step and q > detail.BASE]


def encoded_as(weights, monkeypatch, q: int, setting: ladder.Setting) -> bytes:
    """The sample at quality q, made `setting` for this encode (one way of coding it alone, say)."""
    settings = ladder.settings
    monkeypatch.setattr(ladder, "settings", lambda m, lo=False, effort=DEFAULT_EFFORT: [
        setting if i == q - 1 else s for i, s in enumerate(settings(m, lo, effort))])  # fmt: skip
    try:
        return api.encode(SAMPLE_DNG, model=weights, quality=q, device="cpu")
    finally:
        monkeypatch.setattr(ladder, "settings", settings)


@pytest.fixture(scope="module")
def points(tiny_weights) -> dict[int, tuple[bytes, float]]:
    """The sample at each learned point that bounds a quality coded other ways, or is one (the point
    alone, with its filter), and its PSNR: Setting.floor and .ceiling."""
    rates = sorted({r for q in detail.BELOW for r in (q - 1, q, q + 1)} | {detail.BASE})
    ref = api.reference(SAMPLE_DNG)
    with pytest.MonkeyPatch.context() as mp:
        files = {r: encoded_as(tiny_weights, mp, r, ladder.Setting(r)) for r in rates}
    return {r: (data, psnr(ref, api.decode(data, model=tiny_weights, device="cpu"))) for r, data in files.items()}


@pytest.fixture(scope="module")
def detailed(tiny_weights) -> dict[int, bytes]:
    """The sample at the detail layer's base rate point and at every detail setting above it."""
    qualities = detail_qualities(tiny_weights)
    return {q: api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu") for q in [qualities[0] - 1] + qualities}


@pytest.fixture(scope="module")
def below(tiny_weights) -> dict[int, bytes]:
    """The sample at the qualities below the default that are a coarse layer over a lower point."""
    return {q: api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu") for q in detail.BELOW}


def test_the_ladder_is_learned_points_then_detail_then_archive_settings(tiny_weights):
    model = load_model(tiny_weights).model
    offered = ladder.settings(model)
    kinds = ["archive" if s.archive_shift else "detail" if s.detail_step else "learned" for s in offered]
    assert kinds == ["learned"] * detail.BASE + ["detail"] * len(detail.STEPS) + ["archive"] * (len(offered) - 12)
    assert [s.rate for s in offered[: detail.BASE]] == list(range(1, detail.BASE + 1))
    for q, s in enumerate(offered[: detail.BASE], 1):  # a lower point under a coarse layer, or none
        step, bases = detail.BELOW.get(q, (0, ()))
        assert s.alternatives == tuple((b, step) for b in bases) and all(b < q for b in bases)
        assert (s.floor, s.ceiling) == ((q - 1, q + 1) if bases else (0, 0))  # between the points around it
    for s in offered[detail.BASE : detail.BASE + len(detail.STEPS)]:
        assert s.rate == detail.BASE and s.alternatives == tuple((b, s.detail_step) for b in detail.OTHER_BASES)
    rest = offered[detail.BASE :]
    assert [(s.floor, s.ceiling) for s in rest] == [(detail.BASE, 0)] + [(0, 0)] * (len(rest) - 1)
    assert [s.detail_step for s in offered if s.detail_step] == sorted(detail.STEPS, reverse=True)
    finest, above = offered[detail.BASE + len(detail.STEPS) - 1], offered[detail.BASE + len(detail.STEPS)]
    assert finest.archive_above == (above.rate, above.archive_shift)  # held under the archive above
    assert [s for s in offered if s.archive_above] == [finest]
    assert not any(s.archive_above for s in ladder.settings(model, effort="fast"))  # a trial, as the ways are


def test_size_and_quality_rise_through_the_detail_settings(detailed, tiny_weights):
    ref = api.reference(SAMPLE_DNG)
    sizes = [len(data) for data in detailed.values()]
    scores = [psnr(ref, api.decode(data, model=tiny_weights, device="cpu")) for data in detailed.values()]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert scores == sorted(scores) and len(set(scores)) == len(scores), scores


def test_the_photos_error_is_bounded_by_the_step(detailed, tiny_weights):
    # The rate-distortion quantiser pays at most what the nearest levels would: squared error plus
    # 0.1 step² a bit. A nearest level is within 0.55 of a step (0.05 step towards zero) and no
    # symbol costs more than 16 bits (the tables' precision), so the mean squared error per value
    # is under 0.55² + 0.1 * 16 step², RMS under 1.4 steps; the transforms are orthonormal, so the
    # photo's is too, plus the 8-bit rounding (and LibRaw's rendering, 60-99 dB from the file's).
    ref = api.reference(SAMPLE_DNG).astype(np.float64)
    for q, data in list(detailed.items())[1:]:
        step = bitstream.parse(data).detail_step
        rms = np.sqrt(np.mean((api.decode(data, model=tiny_weights, device="cpu") - ref) ** 2))
        assert rms <= np.hypot(1.4 * step, 0.5), (q, step, rms)


def test_each_setting_with_alternatives_codes_the_photo_the_way_that_scores_best(detailed, below, points, tiny_weights, monkeypatch):
    # The encoder tries each of a setting's ways on the photo (the whole of a small one) and keeps
    # the best trade of PSNR against bits (metrics.rd_score): made in any one way alone, no file
    # of the setting scores more, and the one made the chosen way is the same file.
    ref = api.reference(SAMPLE_DNG)

    def score(data: bytes) -> float:
        return rd_score(psnr(ref, api.decode(data, model=tiny_weights, device="cpu")), 8 * len(data))

    for q, data in {**below, **dict(list(detailed.items())[1:])}.items():
        f = bitstream.parse(data)
        chosen = (f.detail_base, f.detail_step) if f.detail else (f.quality, 0)
        setting = ladder.settings(load_model(tiny_weights).model)[q - 1]
        assert chosen in setting.ways(), (q, chosen)
        # of the ways that fall between the learned points around it, when it is held between them
        floor = (len(points[setting.floor][0]), points[setting.floor][1]) if setting.floor else (0, -np.inf)
        ceiling = (len(points[setting.ceiling][0]), points[setting.ceiling][1]) if setting.ceiling else (np.inf, np.inf)
        for rate, step in setting.ways():
            alone = encoded_as(tiny_weights, monkeypatch, q, ladder.Setting(rate, step))
            if (rate, step) == chosen:
                assert alone == data, q
            elif floor[0] < len(alone) < ceiling[0] and floor[1] < psnr(ref, api.decode(alone, model=tiny_weights, device="cpu")) < ceiling[1]:
                assert score(alone) <= score(data) + 0.01, (q, rate, step)


def test_a_quality_coded_another_way_stays_between_the_learned_points_around_it(points, tiny_weights, monkeypatch):
    # Whatever the encoder prized (here a score of plus or minus the bits: the dearest or the
    # cheapest way), a quality that may be a layer over a lower point makes a file larger than the
    # learned point below it and smaller than the one above it, so the file grows with the quality.
    # Without those bounds the dearest way overshoots the point above (so the bounds hold the order).
    # The photo is held between theirs too, or the quality is its own point alone (with this
    # untrained model the points' PSNRs need not rise: the layers' are far above them).
    from rawbit import codec

    ref = api.reference(SAMPLE_DNG)
    overshoots = []
    for q in detail.BELOW:
        s = ladder.settings(load_model(tiny_weights).model)[q - 1]
        assert (s.floor, s.ceiling) == (q - 1, q + 1)
        (under, worse), (over, better) = [(len(d), p) for d, p in (points[q - 1], points[q + 1])]
        for sign in (-1, 1):
            monkeypatch.setattr(codec, "rd_score", lambda psnr_db, bits, sign=sign: sign * bits)
            data = api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu")
            assert under < len(data) < over, (q, sign)
            between = worse < psnr(ref, api.decode(data, model=tiny_weights, device="cpu")) < better
            assert between or data == points[q][0], (q, sign)
        unbounded = encoded_as(tiny_weights, monkeypatch, q, dataclasses.replace(s, floor=0, ceiling=0))
        overshoots.append(len(unbounded) >= over)
    assert any(overshoots)


def test_a_way_whose_photo_is_worse_than_the_point_below_is_not_taken(points, tiny_weights, monkeypatch):
    # A layer that costs more than the point below but gives a worse photo would make the photo
    # worse as the quality rises (the Kodak kodim15 at quality 4, stop 29). Here every layer's trial
    # is made to look worse than the point below, and the score prizes the dearest way: the
    # quality is then its own learned point, where without the PSNR bound a layer within the bits
    # would be taken.
    from rawbit import codec

    trial = codec._trial

    def worse_layers(f, pairs, step):
        psnr_db, bits = trial(f, pairs, step)
        return (psnr_db - 100.0 if step else psnr_db), bits

    monkeypatch.setattr(codec, "_trial", worse_layers)
    monkeypatch.setattr(codec, "rd_score", lambda psnr_db, bits: bits)
    taken = []
    for q in detail.BELOW:
        s = ladder.settings(load_model(tiny_weights).model)[q - 1]
        under, over = len(points[s.floor][0]), len(points[s.ceiling][0])
        layered = [encoded_as(tiny_weights, monkeypatch, q, ladder.Setting(r, step)) for r, step in s.alternatives]
        taken.append(any(under < len(d) < over and len(d) > len(points[q][0]) for d in layered))
        assert api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu") == points[q][0], q
    assert any(taken)  # some layer lay within the bits and would have been the dearest


def test_the_finest_detail_setting_stays_under_the_archive_setting_above_it(detailed, tiny_weights, monkeypatch):
    # On a photo whose finest detail layer would cost more than the first archive setting (noise
    # and texture the sensor planes code more cheaply: the Kodak kodim02), that quality is an
    # archive layer a step coarser instead, over the same point as the archive setting: smaller
    # than the quality above, nearer the reference rendering than the quality below. A detail file
    # under the archive one stays as it is. Made to happen here with a step no setting has (1).
    model = load_model(tiny_weights).model
    offered = ladder.settings(model)
    q = detail_qualities(tiny_weights)[-1]
    rate, shift = offered[q - 1].archive_above
    above = api.encode(SAMPLE_DNG, model=tiny_weights, quality=q + 1, device="cpu")
    f = bitstream.parse(detailed[q])
    assert len(detailed[q]) < len(above) and f.detail_step == detail.STEPS[-1] and not f.archive
    fine = dataclasses.replace(offered[q - 1], detail_step=1, alternatives=())
    unheld = encoded_as(tiny_weights, monkeypatch, q, dataclasses.replace(fine, archive_above=()))
    assert len(unheld) > len(above)  # without the hold the file would outgrow the quality above
    held = encoded_as(tiny_weights, monkeypatch, q, fine)
    g = bitstream.parse(held)
    assert (g.quality, g.archive_base, g.archive_shift, g.detail) == (q, rate, shift - 1, b"")
    assert len(detailed[q - 1]) < len(held) < len(above)
    ref = api.reference(SAMPLE_DNG)
    scores = [psnr(ref, api.decode(data, model=tiny_weights, device="cpu")) for data in (detailed[q - 1], held, above)]
    assert scores == sorted(scores), scores


def test_the_encoders_effort_says_how_many_ways_it_weighs(tiny_weights):
    # fast: each quality's first way alone; normal: the ways of detail.BELOW and OTHER_BASES; best:
    # those of detail.BELOW_BEST, the default quality's among them. The ladder and each quality's
    # first way are the same at every effort: an effort never changes what a quality means, only
    # how hard the encoder looks.
    model = load_model(tiny_weights).model
    fast, normal, best = (ladder.settings(model, effort=e) for e in EFFORTS)
    assert [s.ways()[0] for s in fast] == [s.ways()[0] for s in normal] == [s.ways()[0] for s in best]
    assert not any(s.alternatives for s in fast) and any(s.alternatives for s in normal)
    assert not normal[detail.BASE - 1].alternatives and best[detail.BASE - 1].alternatives
    more = set(detail.BELOW_BEST) - set(detail.BELOW)
    assert [s for q, s in enumerate(best, 1) if q not in more] == [s for q, s in enumerate(normal, 1) if q not in more]
    for q in more:  # a coarser layer than the quality above's, over a lower point
        step, bases = detail.BELOW_BEST[q]
        assert best[q - 1].alternatives == tuple((b, step) for b in bases) and max(bases) < q
        assert step <= bitstream.MAX_DETAIL_STEP and step > detail.BELOW_BEST.get(q + 1, (0,))[0]
    assert len({ladder.effort_id(e) for e in EFFORTS}) == 3
    with pytest.raises(RawbitError, match="effort 'hard' is not one of fast, normal, best"):
        api.encode(SAMPLE_DNG, model=tiny_weights, effort="hard")


def test_best_effort_codes_the_default_the_way_that_scores_best_and_fast_tries_none(tiny_weights, monkeypatch):
    from rawbit import codec

    ref = api.reference(SAMPLE_DNG)
    tried = []
    trial = codec._trial
    monkeypatch.setattr(codec, "_trial", lambda f, pairs, step: tried.append((f.quality, step)) or trial(f, pairs, step))

    def score(data: bytes) -> float:
        return rd_score(psnr(ref, api.decode(data, model=tiny_weights, device="cpu")), 8 * len(data))

    normal = api.encode(SAMPLE_DNG, model=tiny_weights, quality=detail.BASE, device="cpu")
    best = api.encode(SAMPLE_DNG, model=tiny_weights, quality=detail.BASE, device="cpu", effort="best")
    f = bitstream.parse(best)
    step, bases = detail.BELOW_BEST[detail.BASE]
    floor = ladder.settings(load_model(tiny_weights).model, effort="best")[detail.BASE - 1].floor
    # none at the normal effort; at best the point below (the floor), then each way
    assert floor == detail.BASE - 1 and tried == [(floor, 0), (detail.BASE, 0)] + [(b, step) for b in bases]
    assert (f.detail_base, f.detail_step) in [(0, 0)] + [(b, step) for b in bases] and f.quality == detail.BASE
    assert score(best) >= score(normal) - 0.01
    q = detail_qualities(tiny_weights)[0]
    tried.clear()
    fast = bitstream.parse(api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu", effort="fast"))
    assert (fast.detail_base, fast.detail_step) == (detail.BASE, detail.STEPS[0]) and not tried


def test_a_settings_ways_are_weighed_on_one_rendering_of_the_patches(tmp_path, tiny_weights, monkeypatch):
    # On a large photo the ways are tried on GRID x GRID patches of LibRaw's rendering: the same
    # for every way, so rendered once per encode (plus the whole photo when a layer is chosen),
    # not once per way.
    from rawbit import codec

    path = write_test_dng(tmp_path / "large.dng", height=1536, width=1536)
    quality = min(detail.BELOW)
    assert len(ladder.settings(load_model(tiny_weights).model)[quality - 1].ways()) >= 3
    renders = []
    render = codec.render_planes
    monkeypatch.setattr(codec, "render_planes", lambda *a, **k: renders.append(a[2]) or render(*a, **k))
    data = api.encode(path, model=tiny_weights, quality=quality, device="cpu")
    side = correction.PATCH + 2 * correction.MARGIN
    patches = [size for size in renders if size == (side, side)]
    assert len(patches) == correction.GRID**2, renders
    assert len(renders) == len(patches) + (1 if bitstream.parse(data).detail else 0)


def test_a_small_photo_is_rendered_once_and_synthesised_once_a_way(tiny_weights, monkeypatch):
    # A photo too small for patches is tried whole: the photo and LibRaw's rendering the winning
    # way's trial made are the ones its layer is coded against, not made again.
    from rawbit import codec

    q = detail_qualities(tiny_weights)[0]
    renders, synths = [], []
    render, synthesise = codec.render_planes, codec._synthesized_photo
    monkeypatch.setattr(codec, "render_planes", lambda *a, **k: renders.append(a[2]) or render(*a, **k))
    monkeypatch.setattr(codec, "_synthesized_photo", lambda *a, **k: synths.append(a[0].quality) or synthesise(*a, **k))
    f = bitstream.parse(api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu"))
    ways = ladder.settings(load_model(tiny_weights).model)[q - 1].ways()
    assert f.detail and len(renders) == 1 and sorted(synths) == sorted(rate for rate, _ in ways)


def test_the_residual_codes_and_decodes_with_many_chunks_and_an_odd_size(monkeypatch):
    monkeypatch.setattr(laplace, "CHUNK", 1000)
    rng = np.random.default_rng(3)
    residual = rng.laplace(0.0, 6.0, size=(131, 77, 3)) + np.linspace(-40, 40, 77)[None, :, None]
    stream, expected = detail.encode(residual, 11)
    layer = detail.parse(stream, (131, 77))
    assert len(layer.chunks) > 1
    rebuilt = detail.decode(layer, 11)
    assert rebuilt.shape == residual.shape
    # What the encoder weighs and fits its loop filter on is exactly what the decoder rebuilds.
    assert np.array_equal(rebuilt, expected)
    assert np.sqrt(np.mean((rebuilt - residual) ** 2)) <= 1.4 * 11


def test_a_residual_within_the_step_codes_as_a_layer_of_no_symbols():
    # The learned photo already as close as the step asks: every value 0, no cell coded, no chunk.
    residual = np.random.default_rng(4).normal(0.0, 2.0, size=(100, 90, 3))
    stream, expected = detail.encode(residual, 255)
    layer = detail.parse(stream, (100, 90))
    assert (layer.scales == detail.ZERO).all() and layer.chunks == []
    assert not detail.decode(layer, 255).any() and not expected.any()
    with pytest.raises(BitstreamError, match="after its last chunk"):
        detail.parse(stream + b"\0\0\0\0", (100, 90))


def _rd_cost(c: np.ndarray, q: np.ndarray, step: int) -> float:
    """Squared error in steps² plus detail._RD_LAMBDA a bit, each cell coded with its best scale
    and a cell of zeros free: what the rate-distortion quantiser minimises."""
    error = float((((c - detail._dequantise(q, step)) / step) ** 2).sum())
    bits = 0.0
    for bands in detail._GROUP_BANDS:
        cell = np.abs(q[:, :, bands, :]).reshape(-1, (bands.stop - bands.start) * q.shape[3])
        lengths = laplace.code_lengths(detail.LIMIT)[np.minimum(cell, detail.LIMIT), laplace.best_scales(cell, detail.LIMIT)[:, None]]
        bits += float(lengths[cell.max(axis=1) > 0].sum())
    return error + detail._RD_LAMBDA * bits


def test_the_layer_chooses_its_values_for_error_and_bits_together():
    # Against the plain dead-zone quantiser it starts from: never a worse trade of squared error
    # for bits; at a coarse step fewer non-zero values (a lone 1 in a sparse band goes to 0), at a
    # fine one a dense band's value may keep the nearest level the dead zone would round down.
    rng = np.random.default_rng(5)
    residual = rng.laplace(0.0, 4.0, size=(200, 264, 3)) * np.linspace(0.2, 3.0, 264)[None, :, None]
    c = detail._coefficients(residual)
    for step in (64, 22, 11):
        plain = (np.sign(c) * np.floor(np.abs(c) / step + detail._DEAD_ZONE)).astype(np.int32)
        chosen = detail._quantise(c, step)
        assert _rd_cost(c, chosen, step) < _rd_cost(c, plain, step), step
        if step == 64:
            assert np.count_nonzero(chosen) < np.count_nonzero(plain)


def test_detail_files_are_format_6_to_8_and_say_what_they_hold(detailed):
    (_, plain), *layered = detailed.items()
    assert bitstream.parse(plain).version in (6, 8) and "detail" not in api.info(plain)
    for q, data in layered:
        f, d = bitstream.parse(data), api.info(data)
        assert f.quality == q and f.detail_base in (detail.BASE, *detail.OTHER_BASES)
        tone = bitstream.TONE_CORRECTION_SIZE in (len(f.correction), len(f.loop))  # 8: a tone filter
        assert f.version == (8 if tone else 7 if f.loop else 6)
        assert d["detail"] == {"base_quality": f.detail_base, "step": f.detail_step}
        assert d["streams"]["detail"] == len(f.detail) and d["bytes"] == len(data)
        assert d["streams"].get("loop", 0) == len(f.loop)


def test_the_loop_filter_is_sent_when_it_pays_and_applied_after_the_layer(tiny_weights, monkeypatch):
    # The loop filter is the correction filter's fit on the photo the detail layer rebuilds: with
    # it the file scores better than the same file without it (its 168 bytes and 2 header bytes
    # paid for at metrics.DB_PER_DOUBLING), and the decoder applies it after the layer.
    ref = api.reference(SAMPLE_DNG)
    q = detail_qualities(tiny_weights)[0]
    monkeypatch.setattr(correction, "_cost_db", lambda size, file_bytes: 0.0)  # sent whenever it gains
    data = api.encode(SAMPLE_DNG, model=tiny_weights, quality=q, device="cpu")
    f = bitstream.parse(data)
    assert f.loop and f.version in (7, 8)  # 8: one of the filters is the tone filter
    without = bitstream.build(dataclasses.replace(f, version=6 if f.version == 7 else 8, loop=b""))
    with_loop = psnr(ref, api.decode(data, model=tiny_weights, device="cpu"))
    assert with_loop > psnr(ref, api.decode(without, model=tiny_weights, device="cpu"))
    identity = bitstream.build(dataclasses.replace(f, loop=correction.pack(correction.identity())))
    assert np.array_equal(api.decode(identity, model=tiny_weights, device="cpu"), api.decode(without, model=tiny_weights, device="cpu"))


def test_a_loop_filter_without_a_detail_layer_is_a_damaged_file(detailed, tiny_weights):
    plain = dataclasses.replace(bitstream.parse(detailed[min(detailed)]), correction=b"")  # format 7's rules
    loop = correction.pack(correction.identity())
    with pytest.raises(ValueError, match="detail layer"):
        bitstream.build(dataclasses.replace(plain, version=7, loop=loop))
    layered = bitstream.parse(list(detailed.values())[-1])
    data = bitstream.build(dataclasses.replace(layered, version=7, loop=loop, correction=b""))
    for fields, match in [(dict(loop_length=0), "loop filter of 0 bytes"), (dict(detail_length=0, loop_length=168), "")]:
        bad = bitstream.rewrite_header(data, **fields)
        _refused(bad, tiny_weights, match or "damaged|truncated|longer")


def test_detail_settings_decode_to_16_bits(detailed, tiny_weights):
    data = list(detailed.values())[-1]
    eight = api.decode(data, model=tiny_weights, device="cpu").astype(np.int64)
    sixteen = api.decode(data, model=tiny_weights, device="cpu", bits=16).astype(np.int64)
    assert sixteen.shape == eight.shape
    assert np.abs(sixteen - 257 * eight).max() <= 129  # the same photo, rounded once at 16 bits


def test_other_phases_and_orientations_decode_to_the_reference_size(tmp_path, tiny_weights):
    dng = write_test_dng(tmp_path / "odd.dng", height=63, width=95, cfa="GRBG", orientation=6, seed=7)
    q = detail_qualities(tiny_weights)[-1]
    out = api.decode(api.encode(dng, model=tiny_weights, quality=q, device="cpu"), model=tiny_weights, device="cpu")
    ref = api.reference(dng)
    assert out.shape == ref.shape and psnr(ref, out) >= 30.0


def _refused(data: bytes, weights, match: str) -> None:
    with pytest.raises(BitstreamError, match=match) as e:
        api.decode(data, model=weights, device="cpu")
    assert "\n" not in str(e.value)


def test_a_damaged_detail_layer_is_refused_in_one_line(detailed, tiny_weights):
    data = list(detailed.values())[-1]
    f = bitstream.parse(data)
    n = int.from_bytes(f.detail[:4], "big")
    for bad_layer, why in [
        (f.detail[:3], "3 bytes of detail layer"),
        (f.detail[:-4], "detail layer"),
        (f.detail + bytes(4), "detail layer"),
        (f.detail[:4] + bytes(n) + f.detail[4 + n :], "detail layer: tile scales"),
    ]:
        _refused(bitstream.build(dataclasses.replace(f, detail=bad_layer)), tiny_weights, why)


def test_detail_header_fields_out_of_range_are_a_damaged_file(detailed, tiny_weights):
    data = list(detailed.values())[-1]
    f = bitstream.parse(data)
    for fields, why in [
        (dict(detail_step=0), "detail step 0"),
        (dict(detail_base=f.quality), "detail layer over rate point"),
        (dict(detail_base=0), "detail layer over rate point"),
        (dict(detail_length=3), "bytes of detail layer"),
    ]:
        with pytest.raises(BitstreamError, match=why):
            bitstream.parse(bitstream.rewrite_header(data, **fields))



def test_a_photo_whose_colour_matrix_libraw_cannot_take_gets_no_detail_file(tiny_weights):
    # The encoder's target is LibRaw's rendering of the planes, which needs the matrix inverted.
    import torch

    from rawbit.codec import encode_raw
    from rawbit.errors import RawbitError
    from rawbit.raw import read_raw

    raw = read_raw(SAMPLE_DNG)
    raw = dataclasses.replace(raw, meta=dataclasses.replace(raw.meta, cam_to_srgb=((1, 0, 0), (1, 0, 0), (0, 0, 1))))
    loaded = load_model(tiny_weights)
    quality = detail_qualities(tiny_weights)[0]
    with pytest.raises(RawbitError, match="not at a detail setting: a colour matrix that cannot be inverted"):
        encode_raw(raw, loaded.model, loaded.model_id, quality, torch.device("cpu"))


def test_a_researcher_can_still_code_every_learned_rate_point_without_a_layer(tiny_weights):
    # The paper's comparison measures what the network alone gives: all of its rate points.
    from rawbit.bench.codecs import RawbitCodec

    n = load_model(tiny_weights).model.n_rates
    assert api.model_qualities(tiny_weights, learned_only=True) == list(range(1, n + 1))
    data = api.encode(SAMPLE_DNG, model=tiny_weights, quality=n, device="cpu", learned_only=True)
    f = bitstream.parse(data)
    assert f.version == 3 and f.quality == n and not f.detail and not f.archive
    learned, layered = RawbitCodec(str(tiny_weights), learned_only=True), RawbitCodec(str(tiny_weights))
    assert learned.qualities() == list(range(1, n + 1)) and layered.qualities()[-1] > n
    assert learned.cache_id() != layered.cache_id()  # never the same cached points
