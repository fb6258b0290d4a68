"""The training log: an append-only CSV (survives resume) and the loss plot drawn from it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..files import write_atomic


class TrainLog:
    """Append-only CSV (survives resume) and a loss plot made from it."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **row) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            for k, v in row.items():
                if k != "step":
                    w.writerow([row["step"], k, f"{v:.6g}" if isinstance(v, float) else v])

    def plot(self, png: Path) -> None:
        if not self.enabled or not self.path.exists():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series = read_log(self.path)
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for ax, keys in zip(axes, (["loss"], ["bpp"], ["psnr"])):
            for key in keys + [k for k in series if k.startswith("val_" + keys[0])]:
                if key in series:
                    xs, ys = zip(*series[key])
                    ax.plot(xs, ys, label=key)
            ax.set_xlabel("step")
            ax.set_title(keys[0])
            ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        write_atomic(png, buf.getvalue(), force=True)


def read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's log.csv as key -> [(step, value), ...] in the order written (rows that are not
    numbers, such as a repeated header after a hand edit, are skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            try:
                series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
            except (TypeError, ValueError):
                continue
    return series
