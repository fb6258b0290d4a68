"""Training: aligned patches, exact resume, a smoke run, distillation and DDP plumbing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_TRAIN, write_test_dng
from rawbit.data.dataset import Sample, load_sample, random_patch, split_of
from rawbit.raw import find_raw_files, unpack
from rawbit.train.checkpoints import load_checkpoint
from rawbit.train.config import load_config
from rawbit.train.loop import train


def _traceable_sample(h: int = 40, w: int = 48) -> Sample:
    """A sample whose sRGB pixel at (y, x) names the photosite it came from: R = mosaic value,
    G = its colour label (R=0, G=1/2, B=3) * 60. Alignment is then checkable pixel by pixel."""
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, size=(4, h, w)).astype(np.float32) / 255.0
    mosaic = unpack(packed)
    labels = np.tile(np.array([[0, 1], [2, 3]]), (h, w))
    srgb = np.stack([np.round(mosaic * 255), labels * 60, np.zeros_like(mosaic)], -1).astype(np.uint8)
    return Sample("trace", packed, srgb, np.ones(4, np.float32), np.eye(3, dtype=np.float32))


@pytest.mark.parametrize("augment", [False, True])
def test_raw_patch_and_srgb_patch_stay_aligned(augment):
    s = _traceable_sample()
    for seed in range(24):  # covers all 8 flips/rotations
        raw, srgb = random_patch(s, 8, np.random.default_rng(seed), augment=augment)
        assert raw.shape == (4, 8, 8) and srgb.shape == (3, 16, 16)
        mosaic = unpack(raw)
        np.testing.assert_array_equal(np.round(mosaic * 255), srgb[0])  # same photosite everywhere
        labels = srgb[1] // 60
        assert labels[0, 0] == 0 and labels[1, 1] == 3, "top-left 2x2 must be RGGB"
        assert set(labels[0::2, 0::2].ravel()) == {0} and set(labels[1::2, 1::2].ravel()) == {3}


def test_grbg_file_patches_align_with_reference(tmp_path):
    """A real GRBG DNG of coloured blocks: each packed patch matches its own reference patch far
    better than the reference shifted by one pixel (what a wrong crop or phase would give)."""
    dng = write_test_dng(tmp_path / "grbg.dng", height=200, width=260, cfa="GRBG", blocks=6)
    s = load_sample(dng, None)
    assert s.srgb.shape[:2] == (2 * s.packed.shape[1], 2 * s.packed.shape[2])
    from rawbit.nets.camera_input import camera_input

    for seed in range(8):
        raw, srgb = random_patch(s, 16, np.random.default_rng(seed), augment=True)
        x = camera_input(torch.from_numpy(raw)[None], torch.from_numpy(s.wb)[None],
                         torch.from_numpy(s.cam_to_srgb)[None])[0].numpy()  # fmt: skip
        rgb_from_raw = np.stack([x[0], (x[1] + x[2]) / 2, x[3]])[:, 1:-1, 1:-1]

        def error(dy: int, dx: int) -> float:
            """Mean error against the reference's 2x2 blocks shifted by (dy, dx) sRGB pixels."""
            ref = sum(srgb[:, 2 + dy + a : 30 + dy + a : 2, 2 + dx + b : 30 + dx + b : 2].astype(float)
                      for a in (0, 1) for b in (0, 1)) / (4 * 255.0)  # fmt: skip
            return float(np.abs(rgb_from_raw - ref).mean())

        shifted = [error(dy, dx) for dy, dx in ((1, 0), (0, 1), (-1, 0), (0, -1))]
        assert error(0, 0) < 0.9 * min(shifted)


def test_split_is_deterministic_and_about_80_5_15():
    names = [Path(f"IMG_{i:04d}.NEF") for i in range(2000)]
    splits = [split_of(p) for p in names]
    assert splits == [split_of(p) for p in names]
    share = {k: splits.count(k) / len(splits) for k in ("train", "val", "test")}
    assert abs(share["train"] - 0.80) < 0.04 and abs(share["val"] - 0.05) < 0.02


def test_cache_key_changes_with_render_settings(tmp_path, monkeypatch):
    from rawbit.data import dataset
    from rawbit import render

    dng = write_test_dng(tmp_path / "a.dng", height=64, width=64)
    k1 = dataset.cache_key(dng)
    monkeypatch.setitem(render.RENDER_SETTINGS, "demosaic_algorithm", "VNG")
    monkeypatch.setattr(dataset, "RENDER_SETTINGS", render.RENDER_SETTINGS)
    assert dataset.cache_key(dng) != k1


def test_twenty_step_smoke_run_writes_everything(tmp_path, photo_folder):
    out = tmp_path / "run"
    weights = train(load_config("cpu", {**TINY_TRAIN, "steps": 20}), [photo_folder], out, device="cpu",
                    progress=False)  # fmt: skip
    assert weights.is_file() and (out / "checkpoint.pt").is_file() and (out / "loss.png").is_file()
    log = (out / "log.csv").read_text()
    assert "val_psnr_q1" in log and "\n20,loss," in log
    from rawbit.nets.registry import load_model

    assert load_model(weights).model.n_rates == 2


def test_resume_reproduces_the_next_loss_of_an_uninterrupted_run(tmp_path, photo_folder):
    cfg = load_config("cpu", {**TINY_TRAIN, "steps": 10})
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, [photo_folder], full, device="cpu", progress=False)
    train({**cfg, "steps": 5}, [photo_folder], part, device="cpu", progress=False)
    train(cfg, [photo_folder], part, resume=True, device="cpu", progress=False)
    a, b = load_checkpoint(full / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    assert a["step"] == b["step"] == 10
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)

    def losses(run):
        rows = [r.split(",") for r in (run / "log.csv").read_text().splitlines()[1:]]
        return [float(v) for s, k, v in rows if k == "loss" and int(s) == 10]

    assert losses(full) == losses(part)


def test_a_background_run_stopped_with_sigterm_saves_its_checkpoint(tmp_path, photo_folder):
    """`nohup rawbit train … &` is stopped with kill (SIGTERM), not Ctrl-C: no step may be lost."""
    import signal
    import time

    cfg = {**load_config("cpu", {**TINY_TRAIN, "steps": 100_000, "checkpoint_every": 100_000}),
           "data": [str(photo_folder)]}  # fmt: skip
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps(cfg))
    out = tmp_path / "bg"
    cmd = [sys.executable, "-m", "rawbit", "train", "--preset", str(preset), "--data", str(photo_folder),
           "--out", str(out), "--device", "cpu", "--cache", str(tmp_path / "c")]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    log = out / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "\n50,loss," in log.read_text()):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] >= 50


def test_existing_run_needs_resume(tmp_path, photo_folder):
    from rawbit.errors import RawbitError

    cfg = load_config("cpu", {**TINY_TRAIN, "steps": 2})
    train(cfg, [photo_folder], tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(RawbitError, match="already holds a run: resume it"):
        train(cfg, [photo_folder], tmp_path / "r", device="cpu", progress=False)


def test_distillation_from_two_teachers_runs(tmp_path, photo_folder):
    from rawbit.nets import create_model
    from rawbit.nets.weights import export

    comp = create_model("rbn-tiny", input="plain", output="raw", lambdas=(0.18,), latent_channels=48)
    isp = create_model("rbn-tiny", input="srgb", lambdas=(0.18,))
    export(comp, tmp_path / "comp.safetensors")
    export(isp, tmp_path / "isp.safetensors")
    cfg = load_config("cpu", {**TINY_TRAIN, "steps": 3, "teacher_comp": str(tmp_path / "comp.safetensors"),
                              "teacher_isp": str(tmp_path / "isp.safetensors")})  # fmt: skip
    train(cfg, [photo_folder], tmp_path / "kd", device="cpu", progress=False)
    rows = (tmp_path / "kd" / "log.csv").read_text()
    kd = [float(r.split(",")[2]) for r in rows.splitlines() if ",kd," in r]
    assert kd and kd[-1] > 0


def test_two_process_ddp_run_with_gloo(tmp_path, photo_folder):
    cfg = {**load_config("cpu", {**TINY_TRAIN, "steps": 4}), "data": [str(photo_folder)]}
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rawbit", "train", "--preset", str(preset), "--data", str(photo_folder),
           "--out", str(tmp_path / "ddp"), "--device", "cpu", "--cache", str(tmp_path / "c")]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"] == 4


def test_find_raw_files_walks_folders(tmp_path):
    (tmp_path / "a").mkdir()
    write_test_dng(tmp_path / "a" / "x.dng", height=32, width=32)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_raw_files(tmp_path)] == ["x.dng"]


def test_kd_weight_decays_by_epoch_of_the_training_set():
    """Eq. 3 with k in epochs: 4 900 steps of 8 photos over a 390-photo set are 100.5 epochs, so
    the weight is alpha0 * gamma^(100.5^2); counted in steps (or thousands of steps) it differs."""
    from rawbit.train.losses import kd_progress, kd_weight

    k = kd_progress(step=4900, unit="epoch", batch_size=8, n_train=390)
    assert k == pytest.approx(4900 * 8 / 390)
    assert kd_weight(1e6, 0.99999, k) == pytest.approx(1e6 * 0.99999 ** ((4900 * 8 / 390) ** 2))
    assert kd_weight(1e6, 0.99999, k) == pytest.approx(903_900, rel=1e-4)  # by hand: 1e6 * e^(-0.10103)
    assert kd_progress(step=4900, unit="step", batch_size=8, n_train=390) == 4900
    assert kd_progress(step=4900, unit="kstep", batch_size=8, n_train=390) == pytest.approx(4.9)
    assert kd_weight(1e6, 0.99999, 0) == 1e6


def test_attention_map_is_signed_channel_sum():
    from rawbit.train.losses import attention_map, attention_transfer

    a = torch.tensor([[[[1.0, -1.0]], [[1.0, -1.0]]]])  # (1, 2, 1, 2): sum over channels = [2, -2]
    np.testing.assert_allclose(attention_map(a).numpy(), [[2 / 8**0.5, -2 / 8**0.5]], rtol=1e-6)
    assert float(attention_transfer([a], [-a])) > 0 and float(attention_transfer([a], [a])) == 0


def test_fine_tuning_starts_from_trained_weights_and_adds_a_lower_rate(tmp_path, photo_folder):
    """`rawbit train --init RUN` continues a trained network; a new lambda below the old ones starts
    from gains extended in log-lambda, so it codes at a lower rate than the old lowest from step 0."""
    from rawbit.nets import create_model
    from rawbit.train.init import init_from

    base = tmp_path / "base"
    train(load_config("cpu", {**TINY_TRAIN, "steps": 6}), [photo_folder], base, device="cpu", progress=False)
    src = load_checkpoint(base / "checkpoint.pt")["model"]
    model = create_model("rbn-tiny", lambdas=(0.0016, 0.0067, 0.18))
    init_from(model, base)
    torch.testing.assert_close(model.g_s[0].weight, src["g_s.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.log_gain[1:], src["log_gain"], rtol=0, atol=0)
    step = src["log_gain"][1] - src["log_gain"][0]  # per unit of log(0.18 / 0.0067)
    expected = src["log_gain"][0] - step * np.log(0.0067 / 0.0016) / np.log(0.18 / 0.0067)
    torch.testing.assert_close(model.log_gain[0], expected.float(), rtol=1e-5, atol=1e-5)

    cfg = load_config("cpu", {**TINY_TRAIN, "steps": 3, "lambdas": [0.0016, 0.0067, 0.18],
                              "lambda_weights": [1, 1, 0], "init": str(base)})  # fmt: skip
    weights = train(cfg, [photo_folder], tmp_path / "ft", device="cpu", progress=False)
    from rawbit.nets.registry import load_model

    assert load_model(weights).model.n_rates == 3


def test_init_refuses_a_different_network(tmp_path):
    from rawbit.errors import RawbitError
    from rawbit.nets import create_model
    from rawbit.nets.weights import export
    from rawbit.train.init import init_from

    export(create_model("rbn-tiny"), tmp_path / "tiny.safetensors")
    with pytest.raises(RawbitError, match="different network"):
        init_from(create_model("rbn-tiny", latent_channels=48), tmp_path / "tiny.safetensors")


def test_rate_weights_steer_which_lambdas_are_trained():
    from rawbit.errors import RawbitError
    from rawbit.train.config import rate_weights as _rate_weights

    assert _rate_weights({"lambdas": [1, 2]}) is None
    np.testing.assert_allclose(_rate_weights({"lambdas": [1, 2, 3], "lambda_weights": [3, 1, 0]}),
                               [0.75, 0.25, 0.0])  # fmt: skip
    with pytest.raises(RawbitError, match="one per lambda"):
        _rate_weights({"lambdas": [1, 2], "lambda_weights": [1]})
    with pytest.raises(RawbitError, match="outside"):
        _rate_weights({"lambdas": [1, 2], "val_qualities": [3]})
    # `--lambda 0.013` replaces the preset's list: its per-rate settings go with it.
    cfg = load_config("cpu", {"lambdas": [0.013]})
    assert "lambda_weights" not in cfg and "val_qualities" not in cfg
