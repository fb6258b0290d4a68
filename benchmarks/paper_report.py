"""docs/results.md: the paper's comparison (RAWtoBit Fig. 3a, 3b, 4, 6 and its claims) written from
what benchmarks/paper_comparison.py left under its runs folder. Every number is read from those
files (training logs, `rawbit bench` outputs, the ISP-Net's ceiling); nothing is typed in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rawbit.bench.bdrate import BD, bd
from rawbit.files import write_atomic
from rawbit.train.log import read_log

MAIN = ("rbn-kd", "rbn", "cs-jt", "cs", "us")  # Fig. 3a
ABLATIONS = ("rbn-kd", "kd-comp-only", "kd-isp-only", "kd-abs", "rbn-kd-fade", "rbn")  # Fig. 6a-b
LOSS_CURVES = ("us", "rbn", "rbn-kd", "rbn-kd-fade")  # Fig. 3b
ATTENTION_CURVES = ("rbn", "rbn-kd", "rbn-kd-fade")  # Fig. 6c-d: signed maps, both teachers measured
ANCHORS = ("jpeg", "webp")
SET_TITLES = {"real": "real RAW test split (cameras no training file came from)", "kodak": "Kodak DNGs (synthetic)"}
# When no second runs were benched: validation PSNR of two runs of the same system, seed and data
# at this budget ended up to ~1 dB apart (RBN 0.2-0.8 dB, RBN+KD 0.9-1.0 dB).
NOISE_DB = 1.0
FIG_DIR = "results"
# One colour per system in every figure.
_ORDER = ("rbn", "rbn-kd", "us", "cs", "cs-jt", "kd-comp-only", "kd-isp-only", "kd-abs", "rbn-kd-fade",
          "jpeg", "webp")  # fmt: skip


def colour(system: str) -> str | None:
    return f"C{_ORDER.index(system)}" if system in _ORDER else None


@dataclass(frozen=True)
class TestSet:
    name: str
    bench: dict  # the bench's bench.json
    points: list[dict]  # its points.csv
    ceiling: dict  # sha256 -> {"path", "psnr"} of the ISP-Net's own rendering ({} when absent)
    folder: Path


@dataclass(frozen=True)
class Claim:
    text: str
    test: str
    anchor: str
    sign: int  # +1: the claim is that test is better than anchor; -1: worse


CLAIMS = (
    Claim("RBN+KD > RBN", "rbn-kd", "rbn", +1),
    Claim("RBN > CS", "rbn", "cs", +1),
    Claim("CS > US", "cs", "us", +1),
    Claim("CS+JT > CS (joint training helps the cascade)", "cs-jt", "cs", +1),
    Claim("removing the ISP teacher hurts (compression teacher only < RBN+KD)", "kd-comp-only", "rbn-kd", -1),
    Claim("removing the compression teacher hurts (ISP teacher only < RBN+KD)", "kd-isp-only", "rbn-kd", -1),
    Claim("\\|·\\| attention maps hurt (< signed, RBN+KD)", "kd-abs", "rbn-kd", -1),
)


# --- reading -----------------------------------------------------------------------------------------
def load_sets(runs: Path) -> list[TestSet]:
    sets = []
    for name in SET_TITLES:
        folder = runs / f"bench-{name}"
        if not (folder / "bench.json").is_file():
            continue
        with open(folder / "points.csv", newline="") as f:
            points = list(csv.DictReader(f))
        ceiling = json.loads((folder / "isp-net.json").read_text()) if (folder / "isp-net.json").is_file() else {}
        sets.append(TestSet(name, json.loads((folder / "bench.json").read_text()), points, ceiling, folder))
    return sets


def codec_name(system: str) -> str:
    return system if system in ANCHORS else f"rawbit-{system}"


def curve(ts: TestSet, system: str) -> tuple[list[float], list[float], list[int]] | None:
    """(bpp, PSNR, quality) per rate point, each averaged over the set's photos; None if not benched."""
    entry = ts.bench["codecs"].get(codec_name(system))
    if entry is None:
        return None
    r = entry["results"]
    rows = [(b, p, q) for b, p, q in zip(r["bpp"], r["psnr-rgb"], r["quality"]) if b is not None and p is not None]
    return [b for b, _, _ in rows], [p for _, p, _ in rows], [q for _, _, q in rows]


def ceiling_psnr(ts: TestSet) -> float | None:
    """The ISP-Net's PSNR averaged over the photos (as the bench averages every codec's)."""
    values = [v["psnr"] for v in ts.ceiling.values()]
    return float(np.mean(values)) if values else None


def compare(ts: TestSet, test: str, anchor: str) -> BD | None:
    a, t = curve(ts, anchor), curve(ts, test)
    if a is None or t is None:
        return None
    return bd(a[0], a[1], t[0], t[1])


def run_to_run(ts: TestSet, replicates: Sequence[tuple[str, str]]) -> list[tuple[str, str, float]]:
    """BD-PSNR between each system and its second run on this set: differences this size are noise."""
    out = []
    for a, b in replicates:
        d = compare(ts, b, a)
        if d is not None and math.isfinite(d.psnr):
            out.append((a, b, d.psnr))
    return out


def noise_db(ts: TestSet, replicates: Sequence[tuple[str, str]]) -> float:
    gaps = run_to_run(ts, replicates)
    return max(abs(g) for _, _, g in gaps) if gaps else NOISE_DB


def verdict(claim: Claim, delta: BD | None, noise: float = NOISE_DB) -> tuple[str, str]:
    """('holds' | 'does not hold' | 'not measured', the numbers behind it) for one claim on one set."""
    if delta is None:
        return "not measured", "–"
    if not math.isfinite(delta.psnr):
        return "not measured", "the two curves share no bit-rate range"
    holds = claim.sign * delta.psnr > 0
    size = "" if abs(delta.psnr) > noise else f"; within the run-to-run noise ({noise:.2f} dB)"
    rate = f", BD-rate {delta.rate:+.1f} %" if math.isfinite(delta.rate) else ""
    return ("holds" if holds else "does not hold"), f"BD-PSNR {delta.psnr:+.2f} dB{rate}{size}"


def bound_verdict(ts: TestSet) -> tuple[str, str]:
    """CS bounded by the ISP-Net: CS's best rate point never passes the ISP-Net's own PSNR."""
    cs, top = curve(ts, "cs"), ceiling_psnr(ts)
    if cs is None or top is None:
        return "not measured", "–"
    best = max(cs[1])
    return ("holds" if best <= top else "does not hold"), f"CS at most {best:.2f} dB, ISP-Net {top:.2f} dB"


# --- figures -----------------------------------------------------------------------------------------
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    write_atomic(path, buf.getvalue(), force=True)


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
            axes[0][0].plot(x, _smooth([p[1] for p in pts]), label=labels[system], color=colour(system))
        val = [(cpu[st] / 60, v) for st, v in s.get("val_psnr_q5", []) if st in cpu]
        if val:
            axes[0][1].plot(*zip(*val), "o-", label=labels[system], color=colour(system))
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
                ax.plot(*zip(*values), "o-", label=labels[system], color=colour(system))
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
    if not rows:
        return ""
    sizes = sorted({(int(p["height"]) * int(p["width"]), p["image"]) for p in rows})
    photo = sizes[len(sizes) // 2][1]
    ref = api.reference(photo)
    target = float(next(p["bpp"] for p in rows if p["image"] == photo and p["quality"] == "5"))
    h, w = ref.shape[:2]
    i, j = (h - crop) // 2, (w - crop) // 2
    cut = (slice(i, i + crop), slice(j, j + crop))
    panels = []
    for system in MAIN:
        mine = [p for p in ts.points if p["codec"] == codec_name(system) and p["image"] == photo]
        if not mine:
            continue
        p = min(mine, key=lambda p: abs(math.log(float(p["bpp"]) / target)))
        stream = ts.folder / "streams" / codec_name(system) / f"{Path(photo).stem}-{p['image_sha256'][:8]}-q{p['quality']}.rbit"
        image = api.decode(stream, model=runs / "models" / f"{system}.safetensors", device="cpu")
        panels.append((f"{labels[system]}\n{float(p['bpp']):.3f} bpp, {float(p['psnr']):.2f} dB (photo)", image[cut]))
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


# --- the document ------------------------------------------------------------------------------------
def _training_table(runs: Path, systems, budget: float) -> list[str]:
    lines = ["| system | paper's name | preset | steps | CPU-min | wall-min | note |", "|---|---|---|---:|---:|---:|---|"]
    for s in systems:
        cfg_path, log = runs / s.name / "config.json", runs / s.name / "log.csv"
        if not s.trained:
            lines.append(f"| {s.name} | {s.label} | {s.model} | – | – | – | composed from {' + '.join(s.compose)}, not trained further |")
            continue
        if not log.is_file():
            lines.append(f"| {s.name} | {s.label} | {s.model} | – | – | – | not trained |")
            continue
        series = read_log(log)
        step = max(st for st, _ in series.get("cpu_s", [(0, 0)]))
        cpu = series.get("cpu_s", [(0, 0)])[-1][1] / 60
        wall = series.get("elapsed_s", [(0, 0)])[-1][1] / 60
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        note = ", ".join(x for x in s.sets if not x.startswith("lambdas"))
        if s.teachers:
            note += ("; " if note else "") + "teachers: " + ", ".join(s.teachers)
        if cfg.get("max_cpu_min") not in (None, budget):
            note += f" (budget {cfg['max_cpu_min']})"
        lines.append(f"| {s.name} | {s.label} | {s.model} | {step} | {cpu:.1f} | {wall:.1f} | {note} |")
    return lines


def _rd_table(ts: TestSet, systems: Sequence[str], labels: dict[str, str]) -> list[str]:
    """The learned systems' rate points; the standard codecs' sweeps differ, so they get a line."""
    qs = sorted({q for s in systems if (c := curve(ts, s)) for q in c[2]})
    lines = ["| system | " + " | ".join(f"q{q}" for q in qs) + " | BD-PSNR vs RBN | BD-rate vs RBN |",
             "|---|" + "---:|" * (len(qs) + 2)]  # fmt: skip
    for s in systems:
        c = curve(ts, s)
        if c is None:
            continue
        by_q = {q: (b, p) for b, p, q in zip(*c)}
        cells = [f"{by_q[q][0]:.3f} / {by_q[q][1]:.2f}" if q in by_q else "–" for q in qs]
        d = compare(ts, s, "rbn")
        bd_cells = ["–", "–"] if d is None or s == "rbn" else [
            f"{d.psnr:+.2f} dB" if math.isfinite(d.psnr) else "no overlap",
            f"{d.rate:+.1f} %" if math.isfinite(d.rate) else "no overlap"]  # fmt: skip
        lines.append(f"| {labels.get(s, s)} | " + " | ".join(cells + bd_cells) + " |")
    return lines


def _ceiling_lines(ts: TestSet) -> list[str]:
    if not ts.ceiling:
        return []
    best_cs: dict[str, float] = {}
    for p in ts.points:
        if p["codec"] == "rawbit-cs":
            best_cs[p["image"]] = max(best_cs.get(p["image"], -1.0), float(p["psnr"]))
    lines = ["| photo | ISP-Net (no bits) | CS, best rate point |", "|---|---:|---:|"]
    for v in ts.ceiling.values():
        best = best_cs.get(v["path"])
        lines.append(f"| {Path(v['path']).name} | {v['psnr']:.2f} | {'–' if best is None else f'{best:.2f}'} |")
    return lines


def write_report(runs: Path, systems, replicates: Sequence[tuple[str, str]], budget: float, docs: Path) -> Path:
    """docs/results.md and docs/results/*.png from the runs folder; returns the markdown's path."""
    labels = {s.name: s.label for s in systems} | {"jpeg": "LibRaw→JPEG", "webp": "LibRaw→WebP"}
    sets = load_sets(runs)
    figs = docs / FIG_DIR
    figs.mkdir(parents=True, exist_ok=True)
    out = [
        "# The paper's comparison at this machine's scale (RAWtoBit §4)",
        "",
        "Written by `python benchmarks/paper_comparison.py --budget "
        f"{budget:g}` (stages train → bench → report; `--stage report` rewrites this page from the runs"
        " and benches it left). Every number below is read from those files.",
        "",
        f"**Budget: {budget:g} CPU-minutes of training per system** (the training process's own CPU time, "
        "`max_cpu_min`), same data (`data/synth-blur`: synthetic DNGs of the training photos, plus "
        "`data/real-train`: the four Canon RAW files), same seed, training preset `cpu`, the `-lite` "
        "networks (`rawbit/nets/presets.json`), one training at a time. The teachers' own budgets are "
        "not counted in the students'. This is ~1000× less training than the paper's; the question is "
        "which of its claims already show at this scale.",
        "",
        "Caveat on the budget: CPU time counts the threads' spinning while they wait, so a run that "
        "shared the cores with other work reaches fewer steps in the same CPU-minutes (the *steps* "
        "column shows what each got).",
        "",
        "## Training",
        "",
        *_training_table(runs, systems, budget),
        "",
    ]
    if sets:
        rd_figure(sets, MAIN, labels, figs / "rd.png")
        out += ["## Rate–distortion (Fig. 3a)", "",
                "`rawbit bench` of each system (real `.rbit` files, bpp of the whole file, PSNR on 8-bit "
                "sRGB against LibRaw's reference rendering, averaged per rate point over the photos), "
                "beside LibRaw's rendering saved as JPEG and WebP. The dotted line is the ISP-Net's own "
                "rendering with no compression: the cascade's ceiling.", "",
                f"![RD, paper systems]({FIG_DIR}/rd.png)", ""]  # fmt: skip
        for ts in sets:
            n = len(ts.bench.get("images", {}))
            anchors = [f"{labels[a]} {d.psnr:+.2f} dB" for a in ANCHORS if (d := compare(ts, a, "rbn")) and math.isfinite(d.psnr)]
            out += [f"### {SET_TITLES[ts.name]}: {n} photos", "", "bpp / PSNR (dB) per rate point:", "",
                    *_rd_table(ts, (*MAIN, *[a for a in ABLATIONS if a not in MAIN]), labels), "",
                    "The standard codecs against RBN, BD-PSNR: " + (", ".join(anchors) or "no overlap") + ".", ""]
            ceiling = _ceiling_lines(ts)
            if ceiling:
                out += ["The cascade's ceiling, per photo:", "", *ceiling, ""]
    loss_figure(runs, labels, figs / "loss.png")
    out += ["## Training curves (Fig. 3b)", "",
            "Left: the rate–distortion part of the training loss (the KD term taken out; every rate "
            "point's λ mixed, as the variable-rate model trains); right: validation PSNR at one λ "
            "(rate point 5) on 8 synthetic 384² crops, against CPU-minutes.", "",
            f"![training curves]({FIG_DIR}/loss.png)", ""]  # fmt: skip
    real = next((ts for ts in sets if ts.name == "real"), None)
    if real is not None:
        what = error_figure(real, runs, labels, figs / "errors.png")
        if what:
            out += ["## Error maps (Fig. 4)", "", f"{what}; top: decoded, bottom: mean |error| over the "
                    "channels on one scale.", "", f"![error maps]({FIG_DIR}/errors.png)", ""]  # fmt: skip
    if sets:
        rd_figure(sets, ABLATIONS, labels, figs / "ablations.png")
    attention_figure(runs, labels, figs / "attention.png")
    out += ["## Ablations (Fig. 6)", "",
            "(a, b) one teacher only, |·| attention maps, and (not in the paper) the KD weight faded to "
            "1 % of α0 within ~150 steps, against RBN+KD and RBN. (c, d) the attention losses against "
            "the teachers at each validation, with and without KD (plain RBN is given the teachers with "
            "zero weight: measured, not taught).", "",
            f"![ablations RD]({FIG_DIR}/ablations.png)", "", f"![attention losses]({FIG_DIR}/attention.png)", ""]
    out += _claims_section(sets, replicates, labels)
    text = "\n".join(out).rstrip() + "\n"
    path = docs / "results.md"
    write_atomic(path, text.encode(), force=True)
    return path


def _claims_section(sets: Sequence[TestSet], replicates: Sequence[tuple[str, str]], labels: dict[str, str]) -> list[str]:
    if not sets:
        return []
    names = [SET_TITLES[ts.name].split(" (")[0] for ts in sets]
    lines = ["## The paper's claims at this scale", "",
             "BD-PSNR of the first system against the second (Akima, over the bit-rate range both cover). "
             "Run-to-run noise, measured as the BD-PSNR between a system and a second run of it (same "
             "preset, seed, data and budget) on the same photos:", ""]  # fmt: skip
    for ts, name in zip(sets, names):
        gaps = run_to_run(ts, replicates)
        said = ", ".join(f"{labels.get(a, a)} {g:+.2f} dB" for a, _, g in gaps) or f"not benched; {NOISE_DB:g} dB assumed from validation"
        lines.append(f"- {name}: {said}.")
    lines += ["", "A difference no larger than the larger of these is called noise.", "",
              "| claim | " + " | ".join(names) + " |", "|---|" + "---|" * len(sets)]  # fmt: skip
    for c in CLAIMS:
        cells = []
        for ts in sets:
            v, why = verdict(c, compare(ts, c.test, c.anchor), noise_db(ts, replicates))
            cells.append(f"**{v}** ({why})")
        lines.append(f"| {c.text} | " + " | ".join(cells) + " |")
    cells = []
    for ts in sets:
        v, why = bound_verdict(ts)
        cells.append(f"**{v}** ({why})")
    lines.append("| CS bounded by the ISP-Net's PSNR | " + " | ".join(cells) + " |")
    real = next((ts for ts in sets if ts.name == "real"), sets[0])
    v, why = verdict(CLAIMS[0], compare(real, "rbn-kd", "rbn"), noise_db(real, replicates))
    beyond = v == "holds" and "noise" not in why
    where = SET_TITLES[real.name].split(" (")[0]
    lines += ["", (f"RBN+KD beats RBN on the {where} beyond the noise ({why}): the shipped default should be "
                   "trained with KD." if beyond else
                   f"RBN+KD does not beat RBN on the {where} beyond the noise ({why}): the shipped default "
                   "stays trained without KD."), ""]  # fmt: skip
    return lines
