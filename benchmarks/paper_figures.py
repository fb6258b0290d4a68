"""The figures of docs/results.md (RAWtoBit Fig. 3a, 3b, 4, 6), drawn from the runs and benches
benchmarks/paper_comparison.py left; benchmarks/paper_report.py writes the page around them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from paper_report import ANCHORS, ATTENTION_CURVES, LOSS_CURVES, MAIN, SET_TITLES, TestSet, ceiling_psnr, codec_name, curve
from rawbit.bench.run import stream_path
from rawbit.files import atomic_writer
from rawbit.train.log import read_log

# One colour per system in every figure.
_ORDER = ("rbn", "rbn-kd", "us", "cs", "cs-jt", "kd-comp-only", "kd-isp-only", "kd-abs", "rbn-kd-fade",
          "jpeg", "webp")  # fmt: skip


def colour(system: str) -> str | None:
    return f"C{_ORDER.index(system)}" if system in _ORDER else None


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, path: Path) -> None:
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    with atomic_writer(path, force=True) as f:
        fig.savefig(f, format="png", dpi=90)


def rd_figure(sets: Sequence[TestSet], systems: Sequence[str], labels: dict[str, str], path: Path) -> None:
    fig, axes = _figure(6.0 * len(sets), 4.6, 1, len(sets))
    for ax, ts in zip(axes[0], sets):
        for system in (*systems, *ANCHORS):
            c = curve(ts, system)
            if c is None:
                continue
            style = ".--" if system in ANCHORS else "o-"
            order = np.argsort(c[0])
            ax.plot(np.asarray(c[0])[order], np.asarray(c[1])[order], style, label=labels.get(system, system),
                    color=colour(system))
        top = ceiling_psnr(ts)
        if top is not None and "cs" in systems:
            ax.axhline(top, color="k", ls=":", lw=1, label=f"ISP-Net, no compression ({top:.2f} dB)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole .rbit / image file)")
        ax.set_ylabel("PSNR (dB) against the reference rendering")
        ax.set_title(SET_TITLES[ts.name], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def _smooth(values: Sequence[float], n: int = 5) -> np.ndarray:
    v = np.asarray(values, float)
    return np.convolve(v, np.ones(n) / n, mode="valid") if len(v) >= n else v


def loss_figure(runs: Path, labels: dict[str, str], path: Path) -> None:
    """Fig. 3b: the rate-distortion part of the training loss (KD term taken out) against the
    run's CPU-minutes, and the validation PSNR at the middle rate point (one lambda)."""
    fig, axes = _figure(12, 4.2, 1, 2)
    for system in LOSS_CURVES:
        log = runs / system / "log.csv"
        if not log.is_file():
            continue
        s = read_log(log)
        cpu = dict(s.get("cpu_s", []))
        kd = dict(s.get("kd", []))
        pts = [(cpu[st] / 60, v - kd.get(st, 0.0)) for st, v in s.get("loss", []) if st in cpu]
        if pts:
            x = _smooth([p[0] for p in pts])
            axes[0][0].plot(x, _smooth([p[1] for p in pts]), label=labels.get(system, system), color=colour(system))
        val = [(cpu[st] / 60, v) for st, v in s.get("val_psnr_q5", []) if st in cpu]
        if val:
            axes[0][1].plot(*zip(*val), "o-", label=labels.get(system, system), color=colour(system))
    axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("training R + λD (all rate points, 5-log moving mean)")
    axes[0][1].set_ylabel("validation PSNR (dB), rate point 5")
    for ax in axes[0]:
        ax.set_xlabel("CPU-minutes of training")
        ax.grid(True, alpha=0.3)
    _save(fig, path)


def attention_figure(runs: Path, labels: dict[str, str], path: Path) -> None:
    """Fig. 6c-d: the unweighted attention losses against the teachers at each validation."""
    fig, axes = _figure(12, 4.2, 1, 2)
    for ax, key, title in ((axes[0][0], "val_at_enc", "encoder vs compression teacher"),
                           (axes[0][1], "val_at_dec", "decoder vs ISP teacher")):  # fmt: skip
        for system in ATTENTION_CURVES:
            log = runs / system / "log.csv"
            values = read_log(log).get(key, []) if log.is_file() else []
            if values:
                ax.plot(*zip(*values), "o-", label=labels.get(system, system), color=colour(system))
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("attention loss (eq. 2, unweighted)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def error_figure(ts: TestSet, runs: Path, labels: dict[str, str], path: Path, crop: int = 320) -> str:
    """Fig. 4: the centre crop of the set's median-sized photo decoded by each main system at the
    rate point nearest RBN's middle one, |error| maps on one scale. Returns what was shown."""
    from rawbit import api

    rows = [p for p in ts.points if p["codec"] == "rawbit-rbn"]
    sizes = sorted({(int(p["height"]) * int(p["width"]), p["image"]) for p in rows})
    if not sizes:
        return ""
    photo = sizes[len(sizes) // 2][1]
    middle = [float(p["bpp"]) for p in rows if p["image"] == photo and p["quality"] == "5"]
    if not middle or not Path(photo).is_file():
        return ""
    target = middle[0]
    ref = api.reference(photo)
    h, w = ref.shape[:2]
    crop = min(crop, h, w)
    i, j = (h - crop) // 2, (w - crop) // 2
    cut = (slice(i, i + crop), slice(j, j + crop))
    panels = []
    for system in MAIN:
        mine = [p for p in ts.points if p["codec"] == codec_name(system) and p["image"] == photo]
        if not mine:
            continue
        p = min(mine, key=lambda p: abs(math.log(float(p["bpp"]) / target)))
        stream = stream_path(ts.folder, codec_name(system), Path(photo), p["image_sha256"], int(p["quality"]), ".rbit")
        if not stream.is_file():  # benched without --keep-files
            continue
        image = api.decode(stream, model=runs / "models" / f"{system}.safetensors", device="cpu")
        title = f"{labels.get(system, system)}\n{float(p['bpp']):.3f} bpp, {float(p['psnr']):.2f} dB (photo)"
        panels.append((title, image[cut]))
    if not panels:
        return ""
    fig, axes = _figure(2.6 * (len(panels) + 1), 5.4, 2, len(panels) + 1)
    axes[0][0].imshow(ref[cut])
    axes[0][0].set_title("reference (LibRaw)", fontsize=8)
    axes[1][0].axis("off")
    for k, (title, image) in enumerate(panels, start=1):
        err = np.abs(image.astype(np.float32) - ref[cut].astype(np.float32)).mean(axis=2) / 255
        axes[0][k].imshow(image)
        axes[0][k].set_title(title, fontsize=8)
        axes[1][k].imshow(err, cmap="inferno", vmin=0, vmax=0.15)
        axes[1][k].set_title("|error|, 0–0.15", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
    return f"{Path(photo).name}, centre {crop}×{crop} crop, rates nearest {target:.3f} bpp (RBN's rate point 5)"
