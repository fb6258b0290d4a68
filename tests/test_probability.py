"""The probability path computes in integers, so a file decodes the same on any machine.

What must hold: every fixed-point layer's sums are exact (float64 gives what int64 gives, at the
largest activations allowed), and coding a photo gives the same bytes and CDF indexes whatever
kernel, thread count or oneDNN setting computes the path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rawbit import api, bitstream
from rawbit.nets import probability
from rawbit.nets.probability import ACT_LIMIT, ExactProbabilityPath, FixedConv

from conftest import SAMPLE_DNG


def _model(weights):
    from rawbit.nets.registry import load_model

    return load_model(weights).model


def _layers(path: ExactProbabilityPath) -> list[FixedConv]:
    return [m for m in path.modules() if isinstance(m, FixedConv)]


def test_every_layer_sums_exactly_at_the_largest_activations(tiny_weights):
    """float64 convolution against int64 arithmetic, with activations at +-ACT_LIMIT (the clamp):
    if any partial sum could leave float64's exact integers, the two would differ."""
    path = ExactProbabilityPath(_model(tiny_weights).latent_codec)
    layers = _layers(path)
    assert any(layer.transposed for layer in layers) and len(layers) >= 9
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        c_in = layer.weight.shape[0 if layer.transposed else 1]
        a = torch.randint(-1, 2, (1, c_in, 9, 11), generator=gen).to(torch.float64) * ACT_LIMIT
        if not layer.transposed:  # the bound itself: the output whose weights sum largest, all aligned
            o = int(layer.weight.abs().sum(dim=(1, 2, 3)).argmax())
            kh, kw = layer.weight.shape[-2:]
            a[0, :, 4 - kh // 2 : 4 + kh // 2 + 1, 5 - kw // 2 : 5 + kw // 2 + 1] = layer.weight[o].sign() * ACT_LIMIT
        assert torch.equal(layer.accumulate(a), layer.accumulate_int64(a)), layer
        assert float(layer.accumulate(a).abs().max()) < 2.0**53


def test_layers_sum_in_row_bands_what_they_sum_whole(tiny_weights):
    """A stride-1 layer over a latent taller than a band runs band by band (its unfolded input would
    be ~0.5 GB at 12 MP): the sums must be the int64 reference's, at band edges and photo edges."""
    from rawbit.nets.probability import BAND_ROWS

    banded = [m for m in _layers(ExactProbabilityPath(_model(tiny_weights).latent_codec))
              if not m.transposed and m.stride == (1, 1) and m.weight.shape[-2] > 1]  # fmt: skip
    assert banded
    gen = torch.Generator().manual_seed(1)
    for layer in banded:
        a = torch.randint(-(2**24), 2**24, (1, layer.weight.shape[1], 2 * BAND_ROWS + 7, 13), generator=gen)
        assert torch.equal(layer.accumulate(a.to(torch.float64)), layer.accumulate_int64(a.to(torch.float64))), layer


def test_context_model_on_the_anchor_phases_equals_the_masked_5x5_convolution(tiny_weights):
    """The decoder computes the checkerboard context only where the mask reads and writes: it must
    give exactly what the dense masked convolution gives at the non-anchor positions."""
    path = ExactProbabilityPath(_model(tiny_weights).latent_codec)
    cb, c = path.checkerboard, path.context
    m = c.weight.shape[1]
    gen = torch.Generator().manual_seed(1)
    anchors = torch.randint(-(2**20), 2**20, (1, m, 76, 10), generator=gen).to(torch.float64)
    full = cb.embed(torch.stack([anchors, torch.zeros_like(anchors)]))
    dense = cb.unembed(torch.round(c.accumulate(full) * 2.0**-c.shift).clamp(-ACT_LIMIT, ACT_LIMIT))[1]
    assert torch.equal(path._context(anchors), dense)
    with probability.kernel("int64"):
        assert torch.equal(path._context(anchors), dense)


def test_weights_keep_float32_precision(tiny_weights):
    """The integer weights are the float weights to ~2**-shift: the path codes what training modelled."""
    model = _model(tiny_weights)
    path = ExactProbabilityPath(model.latent_codec)
    ep = model.latent_codec["y"].entropy_parameters[0]
    fixed = path.entropy_parameters[0]
    assert fixed.shift >= 12
    err = (fixed.weight * 2.0**-fixed.shift - ep.weight.double()).abs().max()
    assert err <= 2.0 ** -(fixed.shift + 1)


def _code(weights, threads: int, mkldnn: bool, kernel: str):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.backends.mkldnn.flags(enabled=mkldnn), probability.kernel(kernel), probability.tracing() as trace:
            data = api.encode(SAMPLE_DNG, model=weights, quality=2, device="cpu")
            n_enc = len(trace)
            pixels = api.decode(data, model=weights, device="cpu")
    finally:
        torch.set_num_threads(before)
    return data, trace[:n_enc], trace[n_enc:], pixels


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_same_bytes_and_indexes_whatever_computes_the_path(tiny_weights):
    """Encode and decode with 1 or 2 threads, oneDNN on or off, the float64 or the int64 kernel:
    identical streams, and the decoder's CDF indexes and means are the encoder's, bit for bit. (The
    correction filter is fitted to the float synthesis: its int16s may move by one, rawbit/correction.py.)"""
    runs = {
        (threads, mkldnn, kernel): _code(tiny_weights, threads, mkldnn, kernel)
        for threads, mkldnn, kernel in [(1, True, "float64"), (2, True, "float64"), (2, False, "float64"), (1, True, "int64")]
    }
    (data0, enc0, dec0, _), *rest = runs.values()
    f0 = bitstream.parse(data0)
    assert f0.version in (6, 8)
    assert len(enc0) == 2 and len(dec0) == 2  # anchors, non-anchors
    for data, enc, dec, _ in [runs[k] for k in runs][1:]:
        f = bitstream.parse(data)
        assert (f.z, f.y_anchor, f.y_rest) == (f0.z, f0.y_anchor, f0.y_rest)
        assert len(f.correction) == len(f0.correction)
        moved = np.frombuffer(f.correction, ">i2").astype(int) - np.frombuffer(f0.correction, ">i2").astype(int)
        assert np.abs(moved).max(initial=0) <= 1
        for (i0, m0), (i1, m1) in zip(enc0 + dec0, enc + dec):
            assert torch.equal(i0, i1) and torch.equal(m0, m1)
    for (ie, me), (id_, md) in zip(enc0, dec0):  # the decoder rebuilds what the encoder used
        assert torch.equal(ie, id_) and torch.equal(me, md)
