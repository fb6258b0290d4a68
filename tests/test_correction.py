"""The correction filter: the encoder measures what the learned photo gets wrong the same way all
over a photo (a colour cast, a softness, a plane a fraction of a pixel off) and sends a 3x3 filter
across the colours that the decoder applies. What must hold: a filter the encoder can know is
found; it is sent only when it pays for its 168 bytes; the decoder applies exactly the filter the
file holds, and the photo nears the reference by it; on a camera no model was trained on it lifts
the photo where the learned layer alone falls short; damaged filter fields are a one-line refusal.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rawbit import api, bitstream, correction
from rawbit.errors import BitstreamError
from rawbit.metrics import psnr

from conftest import SAMPLE_DNG, SHARED, needs_shared


def _smooth_photo(seed: int, h: int = 72, w: int = 90) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, h // 6, w // 6, generator=g, dtype=torch.float64)
    x = torch.nn.functional.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return (0.2 + 0.6 * x + 0.05 * torch.rand(3, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)


def _cast_and_blur() -> torch.Tensor:
    """A filter a learned photo could need: a colour cast, a softness, an offset."""
    w = correction.identity() * 0.6
    w[:, :-1] += 0.4 / 9 * torch.eye(3, dtype=torch.float64).repeat_interleave(9, dim=1)  # a 3x3 box blur
    w[0, 9 + 4] += 0.08  # green leaks into red
    w[2, -1] = -0.03
    return torch.round(w * correction.SCALE) / correction.SCALE


def test_the_encoder_finds_a_filter_that_explains_the_reference():
    photo = _smooth_photo(0)
    truth = _cast_and_blur()
    target = np.round(correction.apply(photo, truth).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    weights, gain = correction.fit([(photo, target, 0)])
    fitted = correction.apply(photo, weights).clamp(0, 1).permute(1, 2, 0).numpy() * 255
    assert psnr(target, np.round(fitted).astype(np.uint8)) >= 50.0  # the same photo up to rounding
    assert gain > 10.0


def test_the_fit_is_the_same_whether_its_sums_run_over_few_rows_or_all():
    pairs = []
    for seed, border in [(1, 0), (2, 1)]:
        photo = _smooth_photo(seed)
        target = np.round(photo.flip(0).permute(1, 2, 0).numpy() * 200 + 20).astype(np.uint8)
        pairs.append((photo, target, border))
    small, gain_small = correction.fit(pairs, rows=5)
    large, gain_large = correction.fit(pairs, rows=10_000)
    assert torch.allclose(small, large, atol=1.01 / correction.SCALE)
    assert gain_small == pytest.approx(gain_large, abs=1e-3)


def test_a_tone_the_linear_filter_cannot_bend_takes_the_tone_filter_and_a_cast_the_plain_one():
    # The tone filter (format 8) adds each pixel's squares, products and cubes of its colours: a
    # colour-dependent tone curve. The encoder sends whichever filter gains most for its bytes.
    photo = _smooth_photo(3, 96, 120)
    curve = photo**0.8 * 0.9 + photo.flip(0) ** 2 * 0.1  # a tone and a colour no 3x3 filter makes
    bent = np.round(curve.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    plain, plain_gain = correction.fit([(photo, bent, 0)])
    tone, tone_gain = correction.fit([(photo, bent, 0)], tone=True)
    assert plain.shape == (3, correction.FEATURES) and tone.shape == (3, correction.FEATURES + correction.TONE)
    assert tone_gain > plain_gain + 3.0
    assert torch.equal(correction.best([(photo, bent, 0)], 10**6), tone)
    fitted = correction.apply(photo.float(), tone).clamp(0, 1).permute(1, 2, 0).numpy() * 255
    assert psnr(bent, np.round(fitted).astype(np.uint8)) >= 40.0
    assert len(correction.pack(tone)) == bitstream.TONE_CORRECTION_SIZE == 222
    assert torch.equal(correction.unpack(correction.pack(tone)), tone)

    cast = np.round(correction.apply(photo, _cast_and_blur()).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert correction.best([(photo, cast, 0)], 10**6).shape == (3, correction.FEATURES)  # the tone terms gain nothing
    assert correction.best([(photo, np.round(photo.permute(1, 2, 0).numpy() * 255).astype(np.uint8), 0)], 10**6) is None


def test_a_file_with_a_tone_filter_is_format_8_and_older_files_keep_their_format(corrected, tiny_weights):
    f = bitstream.parse(corrected[0])
    tone = correction.pack(torch.cat([correction.identity(), torch.zeros(3, correction.TONE, dtype=torch.float64)], 1))
    with pytest.raises(ValueError, match="format-6 .rbit file cannot carry a correction filter of 222 bytes"):
        bitstream.build(dataclasses.replace(f, version=6, correction=tone))
    g = bitstream.parse(bitstream.build(dataclasses.replace(f, version=8, correction=tone)))
    assert g.version == 8 and g.correction == tone and g.loop == b""
    decode = lambda data: api.decode(data, model=tiny_weights, device="cpu")  # noqa: E731
    assert np.array_equal(decode(bitstream.build(g)), decode(corrected[1]))  # the identity, with tone terms at 0
    with pytest.raises(BitstreamError, match="correction filter of 200 bytes, not 168 or 222"):
        bitstream.parse(bitstream.rewrite_header(bitstream.build(g), correction_length=200))


def test_a_filter_is_sent_only_when_it_pays_for_its_bytes():
    assert not correction.worth(0.0, 10**6)
    assert correction.worth(0.2, 10**6)  # 168 bytes are nothing on a megabyte
    assert not correction.worth(0.2, 500)  # but a third of a 500-byte file
    assert correction.worth(1.5, 2000)


def test_the_stored_filter_is_84_int16_and_any_other_length_is_damaged():
    w = _cast_and_blur()
    data = correction.pack(w)
    assert len(data) == bitstream.CORRECTION_SIZE == 168
    assert torch.equal(correction.unpack(data), w)
    with pytest.raises(BitstreamError, match="correction filter of 167 bytes"):
        correction.unpack(data[:-1])


def test_a_large_photo_is_fitted_on_patches_spread_over_it_on_the_latent_grid():
    stride = 16
    visible = (1, 0, 1 + 3000, 4000)
    boxes = correction.patch_boxes(visible, stride)
    assert len(boxes) == correction.GRID**2
    side, margin = correction.PATCH, correction.MARGIN
    for i, j in boxes:
        assert i % stride == 0 and j % stride == 0
        assert visible[0] + margin <= i and i + side + margin <= visible[2]
        assert visible[1] + margin <= j and j + side + margin <= visible[3]
    rows, cols = sorted({i for i, _ in boxes}), sorted({j for _, j in boxes})
    assert all(b - a >= side for a, b in zip(rows, rows[1:])) and all(b - a >= side for a, b in zip(cols, cols[1:]))
    assert rows[-1] - rows[0] > 3000 / 2 and cols[-1] - cols[0] > 4000 / 2  # spread, not central
    assert correction.patch_boxes((0, 0, 1000, 4000), stride) == []  # small: the whole photo


@pytest.fixture(scope="module")
def corrected(tiny_weights) -> tuple[bytes, bytes]:
    """The sample at rate point 3, as the ladder codes it and as the learned layer alone."""
    return tuple(
        api.encode(SAMPLE_DNG, model=tiny_weights, quality=3, device="cpu", learned_only=alone) for alone in (False, True)
    )


def test_the_decoder_applies_the_filter_the_file_holds(corrected, tiny_weights):
    with_filter, alone = corrected
    f, g = bitstream.parse(with_filter), bitstream.parse(alone)
    kind = {bitstream.CORRECTION_SIZE: 6, bitstream.TONE_CORRECTION_SIZE: 8}  # the plain or the tone filter
    assert f.version == kind[len(f.correction)] and g.version == 3
    assert (f.z, f.y_anchor, f.y_rest) == (g.z, g.y_anchor, g.y_rest)  # the same learned layer
    more_header = bitstream.HEADER_SIZES[f.version] - bitstream.HEADER_SIZES[3]  # format 6: 8, 8: 10
    assert len(with_filter) == len(alone) + more_header + len(f.correction)
    unchanged = torch.zeros(3, len(f.correction) // 6, dtype=torch.float64)
    unchanged[:, : correction.FEATURES] = correction.identity()
    neutral = bitstream.build(dataclasses.replace(f, correction=correction.pack(unchanged)))
    decode = lambda data: api.decode(data, model=tiny_weights, device="cpu")  # noqa: E731
    assert np.array_equal(decode(neutral), decode(alone))
    ref = api.reference(SAMPLE_DNG)
    assert psnr(ref, decode(with_filter)) > psnr(ref, decode(alone))
    assert api.info(with_filter)["streams"]["correction"] == len(f.correction)


def test_correction_header_fields_out_of_range_are_a_damaged_file(corrected):
    data = corrected[0]
    for fields, why in [
        (dict(correction_length=167), "correction filter of 167 bytes"),
        (dict(detail_step=11), "detail base 0 and step 11 without a detail layer"),
        (dict(detail_base=2), "detail base 2 and step 0 without a detail layer"),
    ]:
        with pytest.raises(BitstreamError, match=why) as e:
            bitstream.parse(bitstream.rewrite_header(data, **fields))
        assert "\n" not in str(e.value)


@needs_shared
@pytest.mark.parametrize("name, quality, gain", [("kodak_dc50", 6, 1.0), ("blackmagic", 3, 0.4)])
def test_on_a_camera_no_model_trained_on_the_filter_lifts_the_learned_photo(name, quality, gain):
    # The Kodak DC50 (0.4 MP, fitted on the whole photo) and the Blackmagic (9 MP, on patches);
    # both in the real test split (the default's early stages did see these two files: model card).
    path = next(p for p in sorted((SHARED / "raw").iterdir()) if p.name.startswith(name))
    ref = api.reference(path)
    with_filter, alone = (api.encode(path, quality=quality, device="cpu", learned_only=a) for a in (False, True))
    f = bitstream.parse(with_filter)
    assert (f.version, len(f.correction)) in ((6, bitstream.CORRECTION_SIZE), (8, bitstream.TONE_CORRECTION_SIZE))
    lift = psnr(ref, api.decode(with_filter, device="cpu")) - psnr(ref, api.decode(alone, device="cpu"))
    assert lift >= gain, lift
