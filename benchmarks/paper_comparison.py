"""The paper's comparison (RAWtoBit §4: Fig. 3, 4 and 6) at this machine's scale; so far its training part:

    python benchmarks/paper_comparison.py --budget 8 --data data/synth-blur --data data/real-train

train: every system that has no finished run under --runs is trained, one at a time (the two
cores are never split between trainings), each for the same budget of its own CPU-minutes
(`max_cpu_min`, the training process's CPU time: fair even when other work shares the cores),
from the same data and seed, preset `cpu` (lr 5e-4 after 300 warm-up steps, no step down within
the budget). A run stopped early is resumed, never restarted. The teachers are trained first, for
the same budget each; the students' budget does not include them. Done runs are skipped.

Not written yet: the bench of every codec system on the Kodak DNGs and the real test split, and
docs/results.md (Fig. 3a/3b, 4, 6 and the claims table); until then `--stage train` is the only stage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    System("kd-abs", "RBN+KD, |.| attention maps", "rbn-lite", teachers=("teacher-comp", "teacher-isp"),
           sets=("kd_attention=abs",)),
]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["train"], default="train")
    ap.add_argument("--budget", type=float, default=8.0, help="CPU-minutes of training per system")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "paper")
    ap.add_argument("--data", type=Path, action="append", default=[])
    ap.add_argument("--only", default="", help="comma-separated system names (default: all)")
    args = ap.parse_args()
    systems = [BY_NAME[n] for n in args.only.split(",") if n] or SYSTEMS
    if args.stage == "train":
        train_all(systems, args.runs, args.data or [ROOT / "data/synth-blur", ROOT / "data/real-train"], args.budget)


if __name__ == "__main__":
    main()
