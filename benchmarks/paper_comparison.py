"""The paper's comparison (RAWtoBit §4: Fig. 3, 4 and 6) at this machine's scale, in one command:

    python benchmarks/paper_comparison.py --budget 8

Three stages, each resumable; `--stage all` (the default) runs them in order.

train: every system that has no finished run under --runs is trained, one at a time (the two
cores are never split between trainings), each for the same budget of its own CPU-minutes
(`max_cpu_min`, the training process's CPU time: fair even when other work shares the cores),
from the same data and seed, preset `cpu` (lr 5e-4 after 300 warm-up steps, no step down within
the budget). A run stopped early is resumed, never restarted. The teachers are trained first, for
the same budget each; the students' budget does not include them. Done runs are skipped.

bench: `rawbit bench` of every codec system (real .rbit files, whole-file bpp) beside LibRaw→JPEG
and →WebP, on the real-RAW test split (--real: cameras no training file came from) and on Kodak
DNGs (--kodak-limit photos of ../shared/data/srgb/test through `rawbit synth --seed 1`); the
ISP-Net's own rendering of the same photos (no bits: the cascade's ceiling). Points are cached:
an interrupted bench resumes, new weights are measured again.

report: docs/results.md (--report) and its figures under docs/results/ (benchmarks/paper_report.py).

A longer budget for a few systems, the teachers reused (a run folder linked in is reused as it is):

    mkdir -p runs/paper-24 && ln -s ../paper/teacher-comp ../paper/teacher-isp runs/paper-24/
    python benchmarks/paper_comparison.py --budget 24 --runs runs/paper-24 \
        --only teacher-comp,teacher-isp,rbn,rbn-kd-fade --report docs/results-24.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class System:
    name: str  # run folder and the name in tables
    label: str  # what the paper calls it
    model: str  # architecture preset (rawbit/nets/presets.json)
    teachers: tuple[str, ...] = ()  # runs whose weights teach it (attention transfer)
    sets: tuple[str, ...] = ()  # extra --set KEY=VALUE
    codec: bool = True  # writes .rbit files (the teachers and ISP-Net do not render photos from bits)
    compose: tuple[str, ...] = ()  # runs composed into a cascade before training
    trained: bool = True  # False: the composed networks as they are (CS)


SYSTEMS = [
    System("teacher-comp", "compression teacher", "teacher-comp-lite", codec=False),
    System("teacher-isp", "ISP teacher", "teacher-isp-lite", codec=False),
    # Plain RBN is given the teachers with zero weight: they teach nothing, and are measured at each
    # validation only (the attention-loss curves without KD, Fig. 6c-d).
    System("rbn", "RBN", "rbn-lite", teachers=("teacher-comp", "teacher-isp"),
           sets=("kd_alpha_enc=0", "kd_alpha_dec=0")),
    System("rbn-kd", "RBN+KD", "rbn-lite", teachers=("teacher-comp", "teacher-isp")),
    System("us", "US", "us-lite"),
    System("comp-net", "Comp-Net", "comp-net-lite", codec=False),
    System("isp-net", "ISP-Net", "isp-net-lite", codec=False, sets=("lambdas=[0.01]",)),
    System("cs", "CS", "cs-lite", compose=("isp-net", "comp-net"), trained=False),
    System("cs-jt", "CS+JT", "cs-lite", compose=("isp-net", "comp-net"), sets=("freeze=[\"comp\"]",)),
    System("kd-comp-only", "RBN+KD, compression teacher only", "rbn-lite", teachers=("teacher-comp",)),
    System("kd-isp-only", "RBN+KD, ISP teacher only", "rbn-lite", teachers=("teacher-isp",)),
    System("kd-abs", "RBN+KD, absolute-value attention maps", "rbn-lite", teachers=("teacher-comp", "teacher-isp"),
           sets=("kd_attention=abs",)),
    # Not in the paper: its KD weight (alpha0 * gamma^(k^2)) fades within ~1.5 % of its steps, the
    # paper's gamma within this budget not at all (~99 % of alpha0 at the end, k in epochs). Here k
    # counts steps and 0.999795^(150^2) = 0.01: 60 % of alpha0 at step 50, 13 % at 100, 1 % at 150.
    System("rbn-kd-fade", "RBN+KD, KD faded to 1 % by step 150", "rbn-lite",
           teachers=("teacher-comp", "teacher-isp"), sets=("kd_unit=step", "kd_gamma=0.999795")),
    # Second runs of the same system, seed and data: how far apart two runs end (the noise every
    # other difference is read against). A CPU budget stops them at slightly different steps.
    System("rbn-2", "RBN, second run", "rbn-lite"),
    System("rbn-kd-2", "RBN+KD, second run", "rbn-lite", teachers=("teacher-comp", "teacher-isp")),
]
REPLICATES = (("rbn", "rbn-2"), ("rbn-kd", "rbn-kd-2"))
BY_NAME = {s.name: s for s in SYSTEMS}


def run_dir(runs: Path, name: str) -> Path:
    return runs / name


def finished(runs: Path, s: System) -> bool:
    return (run_dir(runs, s.name) / "model.safetensors").is_file()


def train_command(s: System, runs: Path, data: list[Path], budget: float) -> list[str]:
    out = run_dir(runs, s.name)
    cmd = [sys.executable, "-m", "rawbit", "train", "--out", str(out)]
    if (out / "checkpoint.pt").is_file():
        return cmd + ["--resume"]
    cmd += ["--preset", "cpu", "--model", s.model]
    for d in data:
        cmd += ["--data", str(d)]
    sets = [f"max_cpu_min={budget}", "steps=1000000", "val_every=250", "checkpoint_every=250"]
    sets += list(s.sets)
    for t in s.teachers:
        key = {"teacher-comp": "--teacher-comp", "teacher-isp": "--teacher-isp"}[t]
        cmd += [key, str(run_dir(runs, t) / "model.safetensors")]
    if s.compose:
        cmd += ["--init", str(run_dir(runs, s.name) / "composed.safetensors")]
    for kv in sets:
        cmd += ["--set", kv]
    return cmd


def train_all(systems: list[System], runs: Path, data: list[Path], budget: float) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    for s in systems:
        if finished(runs, s):
            print(f"{s.name}: trained", flush=True)
            continue
        missing = [t for t in s.teachers + s.compose if not finished(runs, BY_NAME[t])]
        if missing:
            print(f"{s.name}: waits for {', '.join(missing)}", flush=True)
            continue
        if s.compose:
            compose_cascade(s, runs)
            if not s.trained:
                continue
        cmd = train_command(s, runs, data, budget)
        print(f"{s.name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def compose_cascade(s: System, runs: Path) -> None:
    from rawbit.nets.cascade import compose

    out = run_dir(runs, s.name)
    out.mkdir(parents=True, exist_ok=True)
    isp, comp = (run_dir(runs, n) / "model.safetensors" for n in s.compose)
    compose(isp, comp, out / ("composed.safetensors" if s.trained else "model.safetensors"))


def weights_link(runs: Path, s: System) -> Path:
    """runs/models/<system>.safetensors: bench names a model by its file's stem."""
    link = runs / "models" / f"{s.name}.safetensors"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(os.path.join("..", s.name, "model.safetensors"), link)
    return link


def kodak_dngs(runs: Path, limit: int) -> Path:
    out = runs / "kodak-dng"
    subprocess.run([sys.executable, "-m", "rawbit", "synth", str(SHARED / "srgb" / "test"), "-o", str(out),
                    "--seed", "1", "--limit", str(limit)], check=True, cwd=ROOT)  # fmt: skip
    return out


def bench_all(runs: Path, photos: dict[str, Path]) -> None:
    # Every finished codec system, whatever --only says: a bench's outputs hold only the codecs it
    # was given (the cache makes the ones already measured free).
    codecs = [s for s in SYSTEMS if s.codec and finished(runs, s)]
    models = ",".join(str(weights_link(runs, s)) for s in codecs)
    for set_name, folder in photos.items():
        # One photo at a time (--jobs 1): the two cores go to one model's threads.
        # --learned-only: the paper compares what the networks give, without rawbit's layers above.
        cmd = [sys.executable, "-m", "rawbit", "bench", str(folder), "--models", models, "--learned-only", "--codecs", "jpeg,webp",
               "--anchor", "webp", "--out", str(runs / f"bench-{set_name}"), "--resume", "--jobs", "1",
               "--keep-files", "--no-progress"]  # fmt: skip
        print(f"bench {set_name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        if finished(runs, BY_NAME["isp-net"]):
            isp_ceiling(run_dir(runs, "isp-net") / "model.safetensors", folder, runs / f"bench-{set_name}")


def isp_ceiling(weights: Path, folder: Path, out: Path) -> None:
    """out/isp-net.json: the ISP-Net's PSNR against the reference on each photo (no bits); kept
    while the weights and the photos are the same."""
    import torch

    from rawbit import api
    from rawbit.codec import render_raw
    from rawbit.files import file_sha256, write_atomic
    from rawbit.metrics import psnr
    from rawbit.nets.registry import load_model
    from rawbit.raw import find_raw_files, read_raw

    loaded = load_model(weights)
    photos = {file_sha256(p): p for p in find_raw_files([folder])}
    path = out / "isp-net.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("model_id") == loaded.model_id and set(kept.get("photos", {})) == set(photos):
            return
    model = loaded.model.eval()
    per_photo = {}
    for sha, photo in photos.items():
        image = render_raw(read_raw(photo), model, torch.device("cpu"))
        per_photo[sha] = {"path": str(photo), "psnr": psnr(image, api.reference(photo))}
        print(f"isp-net {photo.name}: {per_photo[sha]['psnr']:.2f} dB", flush=True)
    text = json.dumps({"model_id": loaded.model_id, "photos": per_photo}, indent=2) + "\n"
    write_atomic(path, text.encode(), force=True)


def reproduce(args: argparse.Namespace) -> str:
    """The command that makes the page (all stages), with the options that differ from the defaults."""
    parts = ["python benchmarks/paper_comparison.py", f"--budget {args.budget:g}"]
    for flag, value, default in (("--runs", args.runs, ROOT / "runs" / "paper"), ("--real", args.real, ROOT / "data" / "real-test"),
                                 ("--report", args.report, ROOT / "docs" / "results.md")):  # fmt: skip
        if value != default:
            parts.append(f"{flag} {os.path.relpath(value, ROOT)}")
    parts += [f"--data {os.path.relpath(d, ROOT)}" for d in args.data]
    if args.only:
        parts.append(f"--only {args.only}")
    if args.kodak_limit != 8:
        parts.append(f"--kodak-limit {args.kodak_limit}")
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["train", "bench", "report", "all"], default="all")
    ap.add_argument("--budget", type=float, default=8.0, help="CPU-minutes of training per system")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "paper")
    ap.add_argument("--data", type=Path, action="append", default=[],
                    help="training data (default: data/synth-blur and data/real-train)")
    ap.add_argument("--real", type=Path, default=ROOT / "data" / "real-test",
                    help="real RAW test photos, from cameras no training file came from")
    ap.add_argument("--kodak-limit", type=int, default=8, help="Kodak DNGs benched (first N by name)")
    ap.add_argument("--only", default="", help="comma-separated systems to train (default: all); bench and "
                    "report cover every finished one")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "results.md",
                    help="the page written (its figures go to the folder of the same name beside it)")
    args = ap.parse_args()
    # The stages run subprocesses from the repository root: make every path independent of the caller's.
    args.runs, args.real, args.report = args.runs.resolve(), args.real.resolve(), args.report.resolve()
    args.data = [d.resolve() for d in args.data]
    systems = [BY_NAME[n] for n in args.only.split(",") if n] or SYSTEMS
    if args.stage in ("train", "all"):
        train_all(systems, args.runs, args.data or [ROOT / "data/synth-blur", ROOT / "data/real-train"], args.budget)
    if args.stage in ("bench", "all"):
        bench_all(args.runs, {"real": args.real, "kodak": kodak_dngs(args.runs, args.kodak_limit)})
    if args.stage in ("report", "all"):
        from paper_report import write_report

        write_report(args.runs, SYSTEMS, REPLICATES, args.budget, args.report, reproduce(args))


if __name__ == "__main__":
    main()
