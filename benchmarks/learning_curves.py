"""Learning curves of training runs against CPU time: validation PSNR (and bpp) at each validated
rate point, from each run's log.csv; a PNG and a Markdown table at matched CPU-minutes.

    python benchmarks/learning_curves.py runs/abl-lite runs/abl-isp --png docs/ablation-cpu.png

CPU time is the training process's own (`cpu_s` in log.csv, all its threads), so runs that shared
the cores with other work still compare fairly.
"""

from __future__ import annotations

import argparse
import io
from collections import defaultdict
from pathlib import Path

from rawbit.train.log import read_log


def validations(run: Path) -> list[tuple[float, int, dict[str, float]]]:
    """(CPU seconds, step, {val_psnr_qN, val_bpp_qN, ...}) of every validation of a run."""
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    for key, values in read_log(run / "log.csv").items():
        for step, value in values:
            rows[step][key] = value
    return [(d["cpu_s"], s, d) for s, d in sorted(rows.items()) if "cpu_s" in d and any(k.startswith("val_psnr") for k in d)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--every", type=float, default=10.0, help="table rows every N CPU-minutes")
    args = ap.parse_args()
    curves = {run.name: validations(run) for run in args.runs}
    qualities = sorted({int(k[len("val_psnr_q"):]) for v in curves.values() for _, _, d in v for k in d if k.startswith("val_psnr_q")})
    end = min(v[-1][0] for v in curves.values() if v) / 60
    print("| CPU-min | " + " | ".join(f"{n}: step, " + " / ".join(f"q{q}" for q in qualities) + " PSNR (bpp)" for n in curves) + " |")
    print("|---:|" + "---|" * len(curves))
    minute = args.every
    while minute <= end + 1e-9:
        cells = []
        for vals in curves.values():
            at = [v for v in vals if v[0] <= minute * 60 * 1.02]
            if not at:
                cells.append("–")
                continue
            _, step, d = at[-1]
            cells.append(f"{step}: " + " / ".join(f"{d[f'val_psnr_q{q}']:.2f} ({d[f'val_bpp_q{q}']:.2f})" for q in qualities))
        print(f"| {minute:g} | " + " | ".join(cells) + " |")
        minute += args.every
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rawbit.files import write_atomic

        fig, axes = plt.subplots(1, len(qualities), figsize=(4.5 * len(qualities), 3.6), squeeze=False)
        for ax, q in zip(axes[0], qualities):
            for name, vals in curves.items():
                ax.plot([c / 60 for c, _, _ in vals], [d[f"val_psnr_q{q}"] for _, _, d in vals], label=name)
            ax.set_title(f"rate point q{q}")
            ax.set_xlabel("CPU-minutes")
            ax.set_ylabel("validation PSNR (dB)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        write_atomic(args.png, buf.getvalue(), force=True)


if __name__ == "__main__":
    main()
