"""Networks and their registry: names map to the right thing, shapes and features are as documented."""

from __future__ import annotations

import pytest
import torch

from rawbit.errors import ModelError
from rawbit.nets import RBN, RBNConfig, create_model, list_presets
from rawbit.nets.cascade import Cascade
from rawbit.nets.isp_net import ISPNet
from rawbit.nets.registry import preset_config, resolve
from rawbit.nets.weights import content_hash, export, load


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_the_class_and_config_it_names(name):
    model = create_model(name)
    assert model.config == preset_config(name)
    assert type(model) is {"rbn": RBN, "isp-net": ISPNet, "cascade": Cascade}[model.config.arch]
    # Checked against what each name promises, written out here rather than read from the preset
    # file, so two presets swapped (or a preset edited by mistake) fail.
    expected = PRESET_PROMISES[name]
    got = {k: getattr(model.config, k) for k in expected}
    assert got == expected


# (input, output, latent channels, latent stride, RCAG levels) each preset name stands for.
PRESET_PROMISES = {
    "rbn-paper": dict(input="plain", output="srgb", latent_channels=192, latent_stride=32, rcag_levels=5),
    "rbn-lite": dict(input="camera", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=3),
    "rbn-lite-isp": dict(input="camera", output="isp", latent_channels=128, latent_stride=16, rcag_levels=3),
    "rbn-lite-fast": dict(input="camera", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=0),
    "rbn-lite-plain": dict(input="plain", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=3),
    "rbn-lite-s32": dict(input="camera", output="srgb", latent_channels=128, latent_stride=32, rcag_levels=3),
    "rbn-tiny": dict(input="camera", output="srgb", latent_channels=32, latent_stride=32, rcag_levels=5),
    "teacher-comp-paper": dict(input="plain", output="raw", latent_channels=192, latent_stride=32, rcag_levels=5),
    "teacher-isp-paper": dict(input="srgb", output="srgb", latent_channels=192, latent_stride=32, rcag_levels=5),
    # Matched to rbn-lite layer for layer (attention transfer pairs equal spatial sizes).
    "teacher-comp-lite": dict(input="camera", output="raw", latent_channels=192, latent_stride=16, rcag_levels=3),
    "teacher-isp-lite": dict(input="srgb", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=3),
    # The paper's baselines at rbn-lite's widths: GDN decoders without RCAGs (mbt2018's layout).
    "us-lite": dict(input="camera", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=0),
    "comp-net-lite": dict(input="srgb", output="srgb", latent_channels=128, latent_stride=16, rcag_levels=0),
    "us-tiny": dict(input="camera", output="srgb", latent_channels=32, latent_stride=32, rcag_levels=0),
    "comp-net-tiny": dict(input="srgb", output="srgb", latent_channels=32, latent_stride=32, rcag_levels=0),
    "isp-net-lite": dict(input="camera", output="srgb", latent_stride=1),
    "isp-net-tiny": dict(input="camera", output="srgb", latent_stride=1),
    "cs-lite": dict(input="camera", output="srgb", latent_stride=16),
    "cs-tiny": dict(input="camera", output="srgb", latent_stride=32),
}


def test_every_preset_has_a_written_promise():
    assert set(PRESET_PROMISES) == set(list_presets())


def test_unknown_names_get_suggestions():
    with pytest.raises(ModelError, match="did you mean rbn-lite"):
        create_model("rbn-lyte")
    with pytest.raises(ModelError):
        resolve("no-such-model")


@pytest.mark.parametrize("name,in_ch,out_shape", [
    ("rbn-tiny", 4, (1, 3, 128, 128)),
])  # fmt: skip
def test_forward_shapes_and_recorded_features(name, in_ch, out_shape):
    model = create_model(name)
    out = model(torch.rand(1, in_ch, 64, 64), 0, torch.ones(1, 4), torch.eye(3)[None], record=True)
    assert out.x_hat.shape == out_shape
    assert set(out.likelihoods) == {"y", "z"}
    assert out.likelihoods["y"].shape[-2:] == (4, 4)  # 1/32 of the 128px sRGB output
    assert len(out.enc_features) == 4 and len(out.dec_features) >= 5


@pytest.mark.parametrize("stride", [32, 16])
def test_latent_stride_sets_latent_size_and_input_multiple(stride):
    levels = {32: (32, 32, 24, 16, 8), 16: (32, 24, 16, 8)}[stride]
    model = create_model("rbn-tiny", latent_stride=stride, dec_channels=levels)
    out = model(torch.rand(1, 4, 128, 192), 0, torch.ones(1, 4), torch.eye(3)[None])
    assert out.x_hat.shape == (1, 3, 256, 384)
    assert out.likelihoods["y"].shape[-2:] == (256 // stride, 384 // stride)
    assert model.input_multiple == 2 * stride  # packed RAW pixels: z sits at 1/4 of y
    assert model.latent_size(250, 380) == (256 // stride, 384 // stride)


@pytest.mark.parametrize("levels", [0, 1, 3])
def test_rcag_levels_counts_decoder_levels_with_attention_groups_from_the_coarsest(levels):
    from rawbit.nets.blocks import RCAG

    model = create_model("rbn-tiny", rcag_levels=levels)
    groups = [m for m in model.g_s if isinstance(m, RCAG)]
    assert len(groups) == levels
    if levels:
        assert model.g_s[1] is groups[0]  # straight after the first convolution, at the latent size


def test_a_decoder_that_does_not_match_the_latent_stride_is_refused():
    with pytest.raises(ValueError, match="decoder levels"):
        create_model("rbn-tiny", latent_stride=16)


def test_teachers_share_the_students_layer_shapes():
    """Attention transfer compares maps layer by layer: spatial sizes must line up."""
    student = create_model("rbn-tiny")
    comp = create_model("rbn-tiny", input="plain", output="raw", latent_channels=48)
    isp = create_model("rbn-tiny", input="srgb")
    raw, srgb = torch.rand(1, 4, 64, 64), torch.rand(1, 3, 128, 128)
    s = student(raw, 0, torch.ones(1, 4), torch.eye(3)[None], record=True)
    c = comp(raw, 0, record=True)
    i = isp(srgb, 0, record=True)
    assert c.x_hat.shape == raw.shape and i.x_hat.shape == srgb.shape
    assert [f.shape[-2:] for f in s.enc_features] == [f.shape[-2:] for f in c.enc_features]
    assert [f.shape[-2:] for f in s.dec_features] == [f.shape[-2:] for f in i.dec_features]


def test_weights_round_trip_with_config_and_id(tmp_path):
    model = create_model("rbn-tiny")
    path = tmp_path / "m.safetensors"
    model_id = export(model, path)
    loaded, loaded_id = load(path)
    assert loaded_id == model_id and loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a)  # CDF tables included


def test_content_hash_changes_with_any_weight():
    model = create_model("rbn-tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    h = content_hash(state)
    state["g_a.0.bias"][0] += 1e-3
    assert content_hash(state) != h


def test_config_round_trips_through_dict():
    c = preset_config("rbn-lite", lambdas=(0.013,))
    assert RBNConfig.from_dict(c.to_dict()) == c


def test_rbn_keeps_compressais_compression_model_contract(tiny_weights):
    """compressai's tooling can drive RBN as any of its models: forward gives out["x_hat"] and
    out["likelihoods"]; compress/decompress code an image; a fresh network loads a state dict
    whose CDF tables it did not have yet (load_state_dict resizes the buffers)."""
    from compressai.models import CompressionModel

    from rawbit.nets.registry import load_model

    model = load_model(tiny_weights).model
    assert isinstance(model, CompressionModel) and float(model.aux_loss().detach()) >= 0
    x, wb, ccm = torch.rand(1, 4, 64, 64), torch.ones(1, 4), torch.eye(3)[None]
    with torch.no_grad():  # the registry's shared model has met inference mode elsewhere
        out = model(x, 1, wb, ccm)
    assert out["x_hat"].shape == (1, 3, 128, 128) and set(out["likelihoods"]) == {"y", "z"}
    coded = model.compress(x, 1, wb, ccm)
    assert len(coded["strings"]) == 3 and all(len(s) == 1 and s[0] for s in coded["strings"])
    decoded = model.decompress(coded["strings"], coded["shape"], 1, wb, ccm)["x_hat"]
    assert decoded.shape == (1, 3, 128, 128) and torch.isfinite(decoded).all()
    fresh = RBN(model.config)
    cdf = "latent_codec.hyper.entropy_bottleneck._quantized_cdf"
    assert fresh.state_dict()[cdf].numel() == 0  # an untrained network has no tables yet
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.state_dict()[cdf], model.state_dict()[cdf])
    again = fresh.decompress(coded["strings"], coded["shape"], 1, wb, ccm)["x_hat"]
    assert torch.equal(again, decoded)
