"""Tests of `rawbit bench`: metrics, BD deltas, the point cache, reports and the --check gate."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rawbit.bench import check as check_mod
from rawbit.bench import run as run_mod
from rawbit.bench.bdrate import bd, bd_psnr, bd_rate, psnr_gap
from rawbit.bench.cli import bench
from rawbit.bench.codecs import Codec, PillowCodec, RawbitCodec
from rawbit.metrics import bpp, ms_ssim, psnr
from rawbit.bench.report import aggregate, write_all
from rawbit.bench.run import run_bench
from rawbit.errors import RawbitError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL_RAW = SHARED / "raw" / "kodak_dc50_01.kdc"
needs_shared = pytest.mark.skipif(not SMALL_RAW.is_file(), reason="../shared/data is absent")

RATES = [0.1, 0.25, 0.5, 1.0, 2.0]
PSNRS = [28.0, 31.0, 34.0, 37.0, 40.0]


def _photo(h: int = 192, w: int = 256) -> np.ndarray:
    """A smooth scene with texture: codecs give a monotonic RD curve on it."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 60 * np.sin(x / 7) * np.cos(y / 9)], -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


class FakeModel(Codec):
    """Stand-in for a rawbit model: a 16-byte header + JPEG of the reference; counts its encodes."""

    name = "rawbit-fake"
    kind = "learned"
    encodes = 0

    def qualities(self) -> list[int]:
        return [1, 2, 3]

    def description(self) -> str:
        return "fake model"

    def encode(self, path: Path, reference: np.ndarray, quality: int) -> bytes:
        FakeModel.encodes += 1
        buf = io.BytesIO()
        Image.fromarray(reference).save(buf, format="JPEG", quality=25 * quality)
        return b"RBIT" + bytes(12) + buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data[16:])).convert("RGB"))


@pytest.fixture
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Two 'RAW files' whose reference rendering is a synthetic photo (no LibRaw needed)."""
    files = []
    for i in range(2):
        f = tmp_path / "in" / f"photo{i}.dng"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"fake raw %d" % i)
        files.append(f)
    monkeypatch.setattr(run_mod, "reference", lambda path: _photo())
    return files


# --- metrics ---------------------------------------------------------------------------------


def test_bpp_is_whole_file_bits_over_srgb_pixels() -> None:
    assert bpp(1000, 100, 80) == 1.0
    assert bpp(3, 2, 3) == 4.0


def test_psnr_of_known_error_and_identical_images() -> None:
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a + np.uint8(5)  # MSE 25
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(a, a) == math.inf


@pytest.mark.parametrize("shape", [(192, 256), (201, 333)])  # even and odd sides (padded pooling)
def test_ms_ssim_agrees_with_pytorch_msssim(shape: tuple[int, int]) -> None:
    import torch
    from pytorch_msssim import ms_ssim as reference_ms_ssim

    a = _photo(*shape)
    noise = np.random.default_rng(1).integers(-30, 30, a.shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)

    def tensor(x: np.ndarray) -> "torch.Tensor":
        return torch.tensor(x).permute(2, 0, 1)[None].float()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its OpenMP pool crawls when the cores are shared with other jobs
    try:
        expected = reference_ms_ssim(tensor(a), tensor(b), data_range=255).item()
    finally:
        torch.set_num_threads(threads)
    assert ms_ssim(a, b) == pytest.approx(expected, abs=2e-5)


def test_ms_ssim_is_one_for_identical_and_nan_for_thumbnails() -> None:
    img = _photo()
    assert ms_ssim(img, img) == pytest.approx(1.0)
    assert math.isnan(ms_ssim(img[:100], img[:100]))


# --- Bjøntegaard deltas ----------------------------------------------------------------------


def test_bd_rate_of_curve_scaled_in_rate_is_that_factor() -> None:
    # Same PSNR at 80 % of the rate everywhere: exactly -20 % whatever the interpolation.
    assert bd_rate(RATES, PSNRS, [r * 0.8 for r in RATES], PSNRS) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, [r * 1.5 for r in RATES], PSNRS) == pytest.approx(50.0, abs=1e-9)


def test_bd_psnr_of_curve_shifted_in_psnr_is_that_shift() -> None:
    assert bd_psnr(RATES, PSNRS, RATES, [p + 0.5 for p in PSNRS]) == pytest.approx(0.5, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, [p - 1.25 for p in PSNRS]) == pytest.approx(-1.25, abs=1e-9)


def test_bd_is_order_free_and_nan_without_overlap() -> None:
    shuffled = [3, 0, 4, 1, 2]
    r = bd_rate(RATES, PSNRS, [RATES[i] * 0.8 for i in shuffled], [PSNRS[i] for i in shuffled])
    assert r == pytest.approx(-20.0, abs=1e-9)
    far = bd(RATES, PSNRS, [5.0, 6.0, 7.0], [50.0, 51.0, 52.0])
    assert math.isnan(far.rate) and math.isnan(far.psnr) and far.overlap_psnr == 0


def test_psnr_gap_compares_with_the_anchor_at_the_same_bpp_and_only_where_it_was_measured() -> None:
    # On a measured anchor point, 0.4 dB above it, and halfway (in log-rate) between two points.
    assert psnr_gap(RATES, PSNRS, 0.25, 31.4) == pytest.approx(0.4, abs=1e-9)
    assert psnr_gap(RATES, PSNRS, math.sqrt(0.25 * 0.5), 32.0) == pytest.approx(-0.5, abs=1e-9)
    # Below JPEG's smallest file or above its largest there is nothing to compare with.
    assert math.isnan(psnr_gap(RATES, PSNRS, 0.05, 30.0))
    assert math.isnan(psnr_gap(RATES, PSNRS, 3.0, 45.0))


# --- run, cache, reports ---------------------------------------------------------------------


def test_bpp_is_counted_from_the_bytes_of_the_written_files(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    codecs = [FakeModel(), PillowCodec("jpeg", sweep=(20, 80))]
    result = run_bench(photos, codecs, out, keep_files=True, progress=False)
    assert len(result.points) == 2 * (3 + 2) and not result.skipped
    streams = {p.with_suffix("").name: p.stat().st_size for p in (out / "streams").rglob("*-q*.*")}
    assert len(streams) == len(result.points)
    for p in result.points:
        size = streams[f"{Path(p.image).stem}-{p.image_sha256[:8]}-q{p.quality}"]
        assert p.bytes == size
        assert p.bpp == size * 8 / (192 * 256)
    assert len(list((out / "streams" / "jpeg").glob("*.jpg"))) == 4
    fake = [p for p in result.points if p.codec == "rawbit-fake"]
    assert all(p.bytes > 16 for p in fake)  # header included


def test_resume_reuses_finished_points_and_remeasures_changed_files(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    FakeModel.encodes = 0
    first = run_bench(photos, [FakeModel()], out, progress=False)
    assert FakeModel.encodes == 6
    again = run_bench(photos, [FakeModel()], out, resume=True, progress=False)
    assert FakeModel.encodes == 6 and again.reused == 6
    assert [p.bytes for p in again.points] == [p.bytes for p in first.points]
    photos[0].write_bytes(b"edited")  # new content, same name: a new key
    run_bench(photos, [FakeModel()], out, resume=True, progress=False)
    assert FakeModel.encodes == 9
    run_bench(photos, [FakeModel()], out, resume=False, progress=False)
    assert FakeModel.encodes == 15


def test_learned_codec_encodes_the_raw_file_through_the_api(
    photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path
) -> None:
    import rawbit.api as api

    calls: list[tuple] = []
    efforts: list[str] = []

    def encode(path, *, model, quality, device, learned_only=False, effort="normal"):
        calls.append(("encode", Path(path).name, model, quality, device))
        efforts.append(effort)
        return b"R" * (100 * quality)

    def decode(data, *, model=None, device="cpu"):
        calls.append(("decode", len(data), model, device))
        return _photo()

    monkeypatch.setattr(api, "encode", encode)
    monkeypatch.setattr(api, "decode", decode)
    offered = api.model_qualities
    monkeypatch.setattr(api, "model_qualities", lambda model, learned_only=False, only=(): [q for q in (1, 2) if q in (only or (1, 2))])
    monkeypatch.setattr(api, "model_id", lambda model: "0123abcd")
    codec = RawbitCodec(model="/weights/my-model.safetensors")
    assert codec.name == "rawbit-my-model" and RawbitCodec("default").name == "rawbit-default"
    result = run_bench(photos[:1], [codec], tmp_path / "out", progress=False)
    assert [(p.quality, p.bytes, p.psnr) for p in result.points] == [(1, 100, math.inf), (2, 200, math.inf)]
    assert ("encode", "photo0.dng", "/weights/my-model.safetensors", 2, "cpu") in calls
    assert ("decode", 200, "/weights/my-model.safetensors", "cpu") in calls

    # --qualities: the listed ones alone; one the model does not offer is refused before any work.
    calls.clear()
    result = run_bench(photos[:1], [RawbitCodec("default", only=(2,))], tmp_path / "two", progress=False)
    assert [p.quality for p in result.points] == [2] and [c[3] for c in calls if c[0] == "encode"] == [2]
    # --effort: each effort but the default is its own curve, its points encoded at that effort.
    efforts.clear()
    best = RawbitCodec("default", only=(1,), effort="best")
    assert [p.codec for p in run_bench(photos[:1], [best], tmp_path / "best", progress=False).points] == ["rawbit-default-best"]
    assert efforts == ["best"] and best.cache_id() != RawbitCodec("default").cache_id()

    monkeypatch.setattr(api, "model_qualities", offered)  # the model's own ladder, as encode checks it
    with pytest.raises(RawbitError, match=f"rawbit-{tiny_weights.stem}: quality 99 is out of range: this model has rate points 1 to"):
        run_bench(photos[:1], [RawbitCodec(str(tiny_weights), only=(2, 99))], tmp_path / "seven", progress=False)
    assert [c for c in calls if c[3] == 99] == []


def test_unreadable_raw_is_reported_and_skipped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dng"
    bad.write_bytes(b"this is not a RAW file")
    lines: list[str] = []
    result = run_bench([bad], [PillowCodec("jpeg", sweep=(50,))], tmp_path / "out", progress=False,
                       log=lines.append)
    assert result.points == [] and len(result.skipped) == 1 and lines == result.skipped
    assert "bad.dng" in lines[0] and "\n" not in lines[0]


def test_outputs_are_compressai_json_csv_markdown_and_plot(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    codecs = [FakeModel(), PillowCodec("jpeg", sweep=(10, 30, 60, 90))]
    result = run_bench(photos, codecs, out, progress=False)
    write_all(result, codecs, "jpeg", out)
    entry = json.loads((out / "rawbit-fake.json").read_text())
    assert {"name", "description", "results"} <= entry.keys()
    for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
        assert len(entry["results"][key]) == 3
    # Averaged per rate point over the two images.
    mean_bpp = np.mean([p.bpp for p in result.points if p.codec == "rawbit-fake" and p.quality == 1])
    assert entry["results"]["bpp"][0] == pytest.approx(mean_bpp)
    rows = list(csv.DictReader(open(out / "points.csv")))
    assert len(rows) == 2 * (3 + 4)
    summary = json.loads((out / "bench.json").read_text())
    assert summary["bd"]["jpeg"]["rate"] == pytest.approx(0.0, abs=1e-9)
    assert "| rawbit-fake |" in (out / "results.md").read_text()
    # Each rate point says how it stands against the anchor at its own bpp.
    gaps = entry["results"]["psnr-vs-anchor"]
    jpeg = summary["codecs"]["jpeg"]["results"]
    for b, p, gap in zip(entry["results"]["bpp"], entry["results"]["psnr-rgb"], gaps):
        inside = min(jpeg["bpp"]) <= b <= max(jpeg["bpp"])
        assert (gap is not None) == inside
        if inside:
            assert gap == pytest.approx(psnr_gap(jpeg["bpp"], jpeg["psnr-rgb"], b, p))
    assert summary["codecs"]["jpeg"]["results"]["psnr-vs-anchor"] == [pytest.approx(0.0, abs=1e-9)] * 4
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- regression check ------------------------------------------------------------------------


def _results(points_bpp: list[float], points_psnr: list[float]) -> dict[str, dict]:
    return {"rawbit-x": {"name": "rawbit-x", "description": "", "results": {
        "quality": [1, 2, 3], "bpp": points_bpp, "psnr-rgb": points_psnr}}}


def test_check_passes_on_the_baseline_itself_and_within_tolerance() -> None:
    base = _results([0.1, 0.3, 0.9], [30.0, 34.0, 38.0])
    assert check_mod.check(base, base, check_mod.Tolerance())[0] == []
    near = _results([0.1005, 0.3, 0.9], [30.0, 33.96, 38.0])
    assert check_mod.check(near, base, check_mod.Tolerance(bpp=0.01, psnr=0.05))[0] == []


def test_check_of_a_subset_of_qualities_compares_those_alone() -> None:
    base = _results([0.1, 0.3, 0.9], [30.0, 34.0, 38.0])
    subset = {"rawbit-x": {"name": "rawbit-x", "description": "", "results": {
        "quality": [1, 3], "bpp": [0.1, 0.9], "psnr-rgb": [30.0, 37.0]}}}
    failures, passes = check_mod.check(subset, base, check_mod.Tolerance(), qualities={1, 3})
    assert len(passes) == 1 and len(failures) == 1 and "q3" in failures[0]
    # Without saying which were benched, the missing point is a failure.
    failures, _ = check_mod.check(subset, base, check_mod.Tolerance())
    assert any("q2: rate point missing" in f for f in failures)


def test_check_fails_on_a_planted_regression() -> None:
    base = _results([0.1, 0.3, 0.9], [30.0, 34.0, 38.0])
    fatter = _results([0.1, 0.32, 0.9], [30.0, 34.0, 38.0])
    blurrier = _results([0.1, 0.3, 0.9], [30.0, 34.0, 37.8])
    failures, _ = check_mod.check(fatter, base, check_mod.Tolerance(bpp=0.01))
    assert len(failures) == 1 and "q2" in failures[0] and "bpp" in failures[0]
    failures, _ = check_mod.check(blurrier, base, check_mod.Tolerance(psnr=0.05))
    assert len(failures) == 1 and "q3" in failures[0] and "PSNR" in failures[0]
    # Absolute bpp tolerance: +0.02 bpp allowed, so the same rise passes.
    assert check_mod.check(fatter, base, check_mod.Tolerance(bpp=0.02, bpp_relative=False))[0] == []


def test_cli_check_passes_on_its_baseline_and_fails_on_a_planted_regression(
    photos: list[Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    args = [str(p) for p in photos] + ["--models", "", "--codecs", "jpeg,webp", "--no-progress"]
    first = runner.invoke(bench, args + ["--out", str(tmp_path / "base")])
    assert first.exit_code == 0, first.output
    assert "| webp |" in first.stdout and "BD-rate" in first.stdout
    baseline = tmp_path / "base" / "bench.json"

    same = runner.invoke(bench, args + ["--out", str(tmp_path / "now"), "--check", str(baseline)])
    assert same.exit_code == 0, same.stderr
    assert "check passed" in same.stderr

    # Plant a regression: pretend the baseline was 5 % smaller at one JPEG rate point.
    data = json.loads(baseline.read_text())
    data["codecs"]["jpeg"]["results"]["bpp"][2] *= 0.95
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(data))
    bad = runner.invoke(bench, args + ["--out", str(tmp_path / "now"), "--resume", "--check", str(planted)])
    assert bad.exit_code == 1
    assert "regression: jpeg q" in bad.stderr and bad.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_cli_reports_handled_errors_in_one_line(photos: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, [str(photos[0]), "--models", "", "--codecs", "png",
                                        "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: unknown codec 'png'") and len(result.stderr.splitlines()) == 1
    result = CliRunner().invoke(bench, [str(photos[0]), "--codecs", "jpeg", "--qualities", "4,high",
                                        "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--qualities" in result.stderr and "1,6,9" in result.stderr


def test_cli_rejects_an_anchor_that_is_not_benched(photos: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, [str(photos[0]), "--models", "", "--codecs", "jpeg",
                                        "--anchor", "avif", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--anchor" in result.stderr


_SLOW_CODEC = """
import os, time
from pathlib import Path
from rawbit.bench.codecs import Codec

class SlowCodec(Codec):
    name, kind = "slow", "standard"

    def __init__(self, marks):
        self.marks = marks

    def qualities(self):
        return [1]

    def description(self):
        return "slow"

    def encode(self, path, reference, quality):
        (Path(self.marks) / str(os.getpid())).touch()  # this worker is at work
        time.sleep(120)
        return b"never"
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with the bench on Linux (prctl)")
def test_a_killed_bench_leaves_no_worker_coding(tmp_path: Path) -> None:
    # A CI job's timeout or `kill` stops a bench without cleanup (SIGKILL here): the workers it
    # started, each in the middle of a photo, must go with it rather than code on for minutes on
    # the cores the next job needs.
    from conftest import write_test_dng

    (tmp_path / "slowcodec.py").write_text(_SLOW_CODEC)
    marks = tmp_path / "marks"
    marks.mkdir()
    photos = [str(write_test_dng(tmp_path / f"p{i}.dng", height=64, width=64)) for i in range(2)]
    script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
              "from slowcodec import SlowCodec\nfrom rawbit.bench.run import run_bench\n"
              f"run_bench({photos!r}, [SlowCodec({str(marks)!r})], {str(tmp_path / 'out')!r}, jobs=2, progress=False)\n")
    bench = subprocess.Popen([sys.executable, "-c", script])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
            workers = [int(p.name) for p in marks.iterdir()]
        assert len(workers) == 2 and bench.poll() is None  # both at work, the bench still running
        bench.kill()
        bench.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        bench.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# --- real RAW files (../shared/data) ---------------------------------------------------------


@needs_shared
def test_real_raw_with_unsupported_files_in_two_jobs(tmp_path: Path) -> None:
    lines: list[str] = []
    data = [SMALL_RAW, SHARED / "unsupported"]
    codecs = [PillowCodec("jpeg", sweep=(30, 90)), PillowCodec("avif", sweep=(50,))]
    result = run_bench(data, codecs, tmp_path / "out", jobs=2, progress=False, log=lines.append)
    assert len(result.skipped) == 2 and all(line.startswith("skipped ") for line in lines)
    assert len(result.points) == 3
    results = aggregate(result.points, codecs)
    jpeg = results["jpeg"]["results"]
    assert jpeg["bpp"][0] < jpeg["bpp"][1] and jpeg["psnr-rgb"][0] < jpeg["psnr-rgb"][1]
    assert all(25 < p.psnr < 60 and 0.8 < p.ms_ssim <= 1 for p in result.points)
