"""docs/results.md: the paper's comparison (RAWtoBit Fig. 3a, 3b, 4, 6 and its claims) written from
what benchmarks/paper_comparison.py left under its runs folder: training logs and configs, `rawbit
bench` outputs, the ISP-Net's ceiling. The figures are drawn by paper_figures.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
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


@dataclass(frozen=True)
class TestSet:
    name: str
    bench: dict  # the bench's bench.json
    points: list[dict]  # its points.csv
    ceiling: dict  # photo sha256 -> {"path", "psnr"} of the ISP-Net's own rendering ({} when absent)
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
        isp = folder / "isp-net.json"
        ceiling = json.loads(isp.read_text()).get("photos", {}) if isp.is_file() else {}
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


def noise_db(ts: TestSet, replicates: Sequence[tuple[str, str]]) -> float | None:
    """The largest run-to-run gap on this set; None when no second run was benched."""
    gaps = run_to_run(ts, replicates)
    return max(abs(g) for _, _, g in gaps) if gaps else None


@dataclass(frozen=True)
class Verdict:
    word: str  # holds | does not hold | within noise | mixed | not measured
    why: str  # the numbers behind it

    def cell(self) -> str:
        return f"**{self.word}** ({self.why})"


def verdict(claim: Claim, delta: BD | None, noise: float | None) -> Verdict:
    """One claim on one set. BD-PSNR decides, unless BD-rate (where the PSNR ranges overlap) says
    the opposite ('mixed': the curves cross) or the gap is no larger than two runs of one system
    differ ('within noise')."""
    if delta is None:
        return Verdict("not measured", "a system not benched")
    if not math.isfinite(delta.psnr):
        return Verdict("not measured", "the two curves share no bit-rate range")
    why = f"BD-PSNR {delta.psnr:+.2f} dB over {delta.overlap_rate:.0%} of the rate range"
    holds = claim.sign * delta.psnr > 0
    if math.isfinite(delta.rate):
        why += f", BD-rate {delta.rate:+.1f} %"
        if (claim.sign * delta.rate < 0) != holds:
            return Verdict("mixed", why)
    if noise is not None and abs(delta.psnr) <= noise:
        return Verdict("within noise", why)
    return Verdict("holds" if holds else "does not hold", why)


def bound_verdict(ts: TestSet) -> Verdict:
    """CS bounded by the ISP-Net: CS's best rate point never passes the ISP-Net's own PSNR."""
    cs, top = curve(ts, "cs"), ceiling_psnr(ts)
    if cs is None or top is None:
        return Verdict("not measured", "CS or the ISP-Net not benched")
    best = max(cs[1])
    return Verdict("holds" if best <= top else "does not hold", f"CS at most {best:.2f} dB, ISP-Net {top:.2f} dB")


# --- the document ------------------------------------------------------------------------------------
def _training_table(runs: Path, systems: Sequence, budget: float) -> list[str]:
    """One row per system with a run folder (or a composed one): steps and CPU time from its log."""
    lines = ["| system | paper's name | preset | steps | CPU-min | wall-min | note |", "|---|---|---|---:|---:|---:|---|"]
    for s in systems:
        folder = runs / s.name
        if not folder.exists():
            continue
        if folder.is_symlink():
            lines.append(f"| {s.name} | {s.label} | {s.model} | – | – | – | the run of {os.readlink(folder)} |")
            continue
        if not s.trained:
            lines.append(f"| {s.name} | {s.label} | {s.model} | – | – | – | composed from {' + '.join(s.compose)}, not trained further |")
            continue
        if not (folder / "log.csv").is_file():
            lines.append(f"| {s.name} | {s.label} | {s.model} | – | – | – | not trained |")
            continue
        series = read_log(folder / "log.csv")
        cpu_s = series.get("cpu_s") or [(0, 0.0)]
        wall_s = series.get("elapsed_s") or [(0, 0.0)]
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        note = ", ".join(x for x in s.sets if not x.startswith("lambdas"))
        if s.teachers:
            note += ("; " if note else "") + "teachers: " + ", ".join(s.teachers)
        if cfg.get("max_cpu_min") not in (None, budget):
            note += f" (budget {cfg['max_cpu_min']})"
        lines.append(f"| {s.name} | {s.label} | {s.model} | {cpu_s[-1][0]} | {cpu_s[-1][1] / 60:.1f} | "
                     f"{wall_s[-1][1] / 60:.1f} | {note} |")  # fmt: skip
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
            sha = p["image_sha256"]
            best_cs[sha] = max(best_cs.get(sha, -math.inf), float(p["psnr"]))
    lines = ["| photo | ISP-Net (no bits) | CS, best rate point |", "|---|---:|---:|"]
    for sha, v in ts.ceiling.items():
        best = best_cs.get(sha)
        lines.append(f"| {Path(v['path']).name} | {v['psnr']:.2f} | {'–' if best is None else f'{best:.2f}'} |")
    return lines


def _setup_text(runs: Path, budget: float) -> list[str]:
    """What every system was trained on, from a run's own config (RBN's, else any)."""
    configs = sorted(runs.glob("*/config.json"), key=lambda p: p.parent.name != "rbn")
    cfg = json.loads(configs[0].read_text()) if configs else {}
    data = ", ".join(f"`{Path(d).name}`" for d in cfg.get("data", [])) or "see each run's config.json"
    val = f"{cfg.get('val_images', '?')} validation photos, centre {cfg.get('val_crop', '?')}² crops"
    return [f"**Budget: {budget:g} CPU-minutes of training per system** (the training process's own CPU "
            f"time, `max_cpu_min`), same data ({data}), seed {cfg.get('seed', '?')}, training preset `cpu`, "
            "the `-lite` networks (`rawbit/nets/presets.json`), one training at a time. The teachers' own "
            "budgets are not counted in the students'. Validation during training: " + val + ".", "",
            "Caveat on the budget: CPU time counts the threads' spinning while they wait, so a run that "
            "shared the cores with other work reaches fewer steps in the same CPU-minutes (the *steps* "
            "column shows what each got).", ""]  # fmt: skip


def write_report(runs: Path, systems: Sequence, replicates: Sequence[tuple[str, str]], budget: float,
                 path: Path, command: str) -> Path:  # fmt: skip
    """`path` (docs/results.md) and its figures in the folder of its name beside it."""
    from paper_figures import attention_figure, error_figure, loss_figure, rd_figure

    labels = {s.name: s.label for s in systems} | {"jpeg": "LibRaw→JPEG", "webp": "LibRaw→WebP"}
    sets = load_sets(runs)
    fig_dir = path.stem
    figs = path.parent / fig_dir
    figs.mkdir(parents=True, exist_ok=True)
    out = ["# The paper's comparison at this machine's scale (RAWtoBit §4)", "",
           f"Written by `{command}` (stages train → bench → report; `--stage report` rewrites this page "
           "from the runs and benches it left). Every number below is read from those files.", "",
           *_setup_text(runs, budget), "## Training", "", *_training_table(runs, systems, budget), ""]  # fmt: skip
    if sets:
        rd_figure(sets, MAIN, labels, figs / "rd.png")
        out += ["## Rate–distortion (Fig. 3a)", "",
                "`rawbit bench` of each system (real `.rbit` files, bpp of the whole file, PSNR on 8-bit "
                "sRGB against LibRaw's reference rendering, averaged per rate point over the photos), "
                "beside LibRaw's rendering saved as JPEG and WebP. The dotted line is the ISP-Net's own "
                "rendering with no compression: the cascade's ceiling.", "",
                f"![RD, paper systems]({fig_dir}/rd.png)", ""]  # fmt: skip
        for ts in sets:
            n = len(ts.bench.get("images", {}))
            anchors = [f"{labels[a]} {d.psnr:+.2f} dB" for a in ANCHORS if (d := compare(ts, a, "rbn")) and math.isfinite(d.psnr)]
            out += [f"### {SET_TITLES[ts.name]}: {n} photos", "", "bpp / PSNR (dB) per rate point:", "",
                    *_rd_table(ts, (*MAIN, *[a for a in ABLATIONS if a not in MAIN]), labels), ""]
            if anchors:
                out += ["The standard codecs against RBN, BD-PSNR: " + ", ".join(anchors) + ".", ""]
            ceiling = _ceiling_lines(ts)
            if ceiling:
                out += ["The cascade's ceiling, per photo:", "", *ceiling, ""]
    loss_figure(runs, labels, figs / "loss.png")
    out += ["## Training curves (Fig. 3b)", "",
            "Left: the rate–distortion part of the training loss (the KD term taken out; every rate "
            "point's λ mixed, as the variable-rate model trains); right: validation PSNR at one λ "
            "(rate point 5), against CPU-minutes.", "",
            f"![training curves]({fig_dir}/loss.png)", ""]  # fmt: skip
    real = next((ts for ts in sets if ts.name == "real"), None)
    what = error_figure(real, runs, labels, figs / "errors.png") if real is not None else ""
    if what:
        out += ["## Error maps (Fig. 4)", "", f"{what}; top: decoded (PSNR of the whole photo), bottom: "
                "mean |error| over the channels on one scale.", "", f"![error maps]({fig_dir}/errors.png)", ""]  # fmt: skip
    if sets:
        rd_figure(sets, ABLATIONS, labels, figs / "ablations.png")
    attention_figure(runs, labels, figs / "attention.png")
    out += ["## Ablations (Fig. 6)", "",
            "(a, b) one teacher only, |·| attention maps, and (not in the paper) the KD weight faded to "
            "1 % of α0 by step 150, against RBN+KD and RBN. (c, d) the attention losses against the "
            "teachers at each validation, with and without KD (plain RBN is given the teachers with "
            "zero weight: measured, not taught).", "",
            f"![ablations RD]({fig_dir}/ablations.png)", "", f"![attention losses]({fig_dir}/attention.png)", ""]
    out += _claims_section(sets, replicates, labels)
    write_atomic(path, ("\n".join(out).rstrip() + "\n").encode(), force=True)
    return path


def _claims_section(sets: Sequence[TestSet], replicates: Sequence[tuple[str, str]], labels: dict[str, str]) -> list[str]:
    if not sets:
        return []
    names = [SET_TITLES[ts.name].split(" (")[0] for ts in sets]
    lines = ["## The paper's claims at this scale", "",
             "BD-PSNR of the first system against the second (Akima, over the bit-rate range both cover), "
             "and BD-rate where their PSNR ranges overlap. Run-to-run noise: the BD-PSNR between a system "
             "and a second run of it (same preset, seed, data and budget; the runs differ only in where "
             "the CPU budget stopped them and in thread timing, so this is a lower bound on the spread "
             "between seeds):", ""]  # fmt: skip
    for ts, name in zip(sets, names):
        gaps = run_to_run(ts, replicates)
        said = ", ".join(f"{labels.get(a, a)} {g:+.2f} dB" for a, _, g in gaps) or "not measured (no second run benched)"
        lines.append(f"- {name}: {said}.")
    lines += ["", "*within noise*: a gap no larger than the larger of these; *mixed*: BD-PSNR and BD-rate "
              "disagree (the curves cross).", "",
              "| claim | " + " | ".join(names) + " |", "|---|" + "---|" * len(sets)]  # fmt: skip
    for c in CLAIMS:
        cells = [verdict(c, compare(ts, c.test, c.anchor), noise_db(ts, replicates)).cell() for ts in sets]
        lines.append(f"| {c.text} | " + " | ".join(cells) + " |")
    lines.append("| CS bounded by the ISP-Net's PSNR | " + " | ".join(bound_verdict(ts).cell() for ts in sets) + " |")
    real = next((ts for ts in sets if ts.name == "real"), sets[0])
    kd = verdict(CLAIMS[0], compare(real, "rbn-kd", "rbn"), noise_db(real, replicates))
    where = SET_TITLES[real.name].split(" (")[0]
    lines += ["", (f"RBN+KD beats RBN on the {where} beyond the noise ({kd.why}): the shipped default should be "
                   "trained with KD." if kd.word == "holds" else
                   f"RBN+KD does not beat RBN on the {where} ({kd.word}: {kd.why}): the shipped default "
                   "stays trained without KD."), ""]  # fmt: skip
    return lines
