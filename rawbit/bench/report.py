"""What a bench writes: CompressAI-style JSON per codec, per-image CSV, markdown table, RD plot."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_writer, write_atomic
from .bdrate import BD, bd, psnr_gap
from .codecs import Codec
from .run import BenchResult, Point

# CompressAI's result keys, plus our own beside them (CompressAI's readers ignore extra keys).
_SERIES = {
    "bpp": "bpp",
    "psnr-rgb": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "encoding_time": "encode_s_per_mp",
    "decoding_time": "decode_s_per_mp",
    "encoding_peak_mib": "encode_peak_mib",
    "decoding_peak_mib": "decode_peak_mib",
}


def _finite(x: float) -> float | None:
    # JSON has no inf/NaN: a lossless PSNR or an undefined MS-SSIM is written as null.
    return float(x) if math.isfinite(x) else None


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def aggregate(points: Sequence[Point], codecs: Sequence[Codec]) -> dict[str, dict]:
    """CompressAI-style results per codec, every metric averaged per rate point over the images.

    Times are seconds per megapixel (CompressAI writes seconds per image; per MP compares photos
    of different sizes). `n_images` says how many photos each average holds.
    """
    by_codec: dict[str, dict[int, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        by_codec[p.codec][p.quality].append(p)
    out = {}
    for codec in codecs:
        rates = by_codec.get(codec.name, {})
        qualities = sorted(rates)
        results: dict[str, list] = {"quality": qualities, "n_images": [len(rates[q]) for q in qualities]}
        for key, attr in _SERIES.items():
            results[key] = [_finite(_mean([getattr(p, attr) for p in rates[q]])) for q in qualities]
        out[codec.name] = {"name": codec.name, "description": codec.description(), "kind": codec.kind,
                           "results": results}
    return out


def _curve(entry: dict) -> tuple[list[float], list[float]]:
    r = entry["results"]
    pairs = [(b, p) for b, p in zip(r["bpp"], r["psnr-rgb"]) if b is not None and p is not None]
    return [b for b, _ in pairs], [p for _, p in pairs]


def bd_table(results: dict[str, dict], anchor: str) -> dict[str, BD]:
    """BD-rate and BD-PSNR of every codec against `anchor`, on the per-rate-point averages."""
    a_bpp, a_psnr = _curve(results[anchor])
    return {name: bd(a_bpp, a_psnr, *_curve(entry)) for name, entry in results.items()}


def add_gaps(results: dict[str, dict], anchor: str) -> None:
    """Each rate point's PSNR gap to the anchor at the same bpp, as `psnr-vs-anchor` (None where
    the anchor's curve does not reach that bpp): where a codec wins, not only on average."""
    a_bpp, a_psnr = _curve(results[anchor])
    for entry in results.values():
        r = entry["results"]
        r["psnr-vs-anchor"] = [
            None if b is None or p is None else _finite(psnr_gap(a_bpp, a_psnr, b, p))
            for b, p in zip(r["bpp"], r["psnr-rgb"])
        ]


def write_json(results: dict[str, dict], out: Path) -> list[Path]:
    """One CompressAI-style JSON per codec: out/<codec>.json."""
    paths = []
    for name, entry in results.items():
        path = out / f"{name}.json"
        write_atomic(path, (json.dumps(entry, indent=2) + "\n").encode(), force=True)
        paths.append(path)
    return paths


def write_summary(result: BenchResult, results: dict[str, dict], bds: dict[str, BD], anchor: str,
                  out: Path) -> Path:
    """out/bench.json: all codecs, the BD table and the images' hashes (what --check reads)."""
    summary = {
        "anchor": anchor,
        "images": result.benched_images(),
        "codecs": results,
        "bd": {n: {k: _finite(v) for k, v in dataclasses.asdict(b).items()} for n, b in bds.items()},
        "skipped": result.skipped,
    }
    path = out / "bench.json"  # --check reads it: never half a file
    write_atomic(path, (json.dumps(summary, indent=2) + "\n").encode(), force=True)
    return path


def write_csv(points: Sequence[Point], out: Path) -> Path:
    """out/points.csv: every per-image point (times in s/MP, memory in MiB)."""
    path = out / "points.csv"
    fields = [f.name for f in dataclasses.fields(Point)]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for p in points:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                         for k, v in dataclasses.asdict(p).items()})
    write_atomic(path, text.getvalue().encode(), force=True)
    return path


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def markdown(results: dict[str, dict], bds: dict[str, BD], anchor: str, n_images: int) -> str:
    """The results as markdown: BD table against the anchor, then every rate point per codec."""
    lines = [
        f"# rawbit bench: {n_images} image(s), anchor `{anchor}`",
        "",
        "BD-rate: average bit-rate change at equal PSNR (negative = smaller files). "
        "BD-PSNR: average PSNR change at equal bpp. Overlap: share of the range both curves cover. "
        f"vs {anchor}: PSNR minus {anchor}'s at the same bpp (its curve interpolated in log-rate; "
        "– outside its range).",
        "",
        "| codec | BD-rate | BD-PSNR | overlap (PSNR / rate) |",
        "|---|---:|---:|---:|",
    ]
    for name, b in bds.items():
        lines.append(f"| {name} | {_fmt(b.rate, '+.2f')} % | {_fmt(b.psnr, '+.3f')} dB | "
                     f"{_fmt(b.overlap_psnr * 100, '.0f')} % / {_fmt(b.overlap_rate * 100, '.0f')} % |")
    for name, entry in results.items():
        r = entry["results"]
        lines += ["", f"## {name}", "", entry["description"], "",
                  f"| quality | bpp | PSNR (dB) | vs {anchor} (dB) | MS-SSIM | encode (s/MP) "
                  "| decode (s/MP) | encode peak (MiB) | decode peak (MiB) | images |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        gaps = r.get("psnr-vs-anchor") or [None] * len(r["quality"])
        for i, q in enumerate(r["quality"]):
            gap = "" if name == anchor else _fmt(gaps[i], "+.2f")
            lines.append(
                f"| {q} | {_fmt(r['bpp'][i], '.4f')} | {_fmt(r['psnr-rgb'][i], '.2f')} | {gap} | "
                f"{_fmt(r['ms-ssim-rgb'][i], '.4f')} | {_fmt(r['encoding_time'][i], '.3f')} | "
                f"{_fmt(r['decoding_time'][i], '.3f')} | {_fmt(r['encoding_peak_mib'][i], '.0f')} | "
                f"{_fmt(r['decoding_peak_mib'][i], '.0f')} | {r['n_images'][i]} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], out: Path) -> Path:
    """out/rd.png: PSNR and MS-SSIM (in dB, -10 log10(1 - MS-SSIM)) against bpp, log-rate axis."""
    # The object API with an Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_psnr, ax_ssim = fig.subplots(1, 2)
    for name, entry in results.items():
        r = entry["results"]
        style = "o-" if entry.get("kind") == "learned" else ".--"
        pts = [(b, p, s) for b, p, s in zip(r["bpp"], r["psnr-rgb"], r["ms-ssim-rgb"]) if b is not None]
        pts.sort()
        bx = [b for b, _, _ in pts]
        ax_psnr.plot(bx, [np.nan if p is None else p for _, p, _ in pts], style, label=name)
        ax_ssim.plot(bx, [np.nan if s is None or s >= 1 else -10 * np.log10(1 - s) for _, _, s in pts],
                     style, label=name)
    for ax, ylabel in ((ax_psnr, "PSNR (dB), sRGB"), (ax_ssim, "MS-SSIM (dB)")):
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    path = out / "rd.png"
    with atomic_writer(path, force=True) as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def write_all(result: BenchResult, codecs: Sequence[Codec], anchor: str, out: str | Path) -> dict[str, dict]:
    """Every output into `out`; returns the aggregated results (what --check compares)."""
    out = Path(out)
    results = aggregate(result.points, codecs)
    bds = bd_table(results, anchor)
    add_gaps(results, anchor)
    write_json(results, out)
    write_summary(result, results, bds, anchor, out)
    write_csv(result.points, out)
    n_images = len({p.image_sha256 for p in result.points})
    write_atomic(out / "results.md", markdown(results, bds, anchor, n_images).encode(), force=True)
    plot(results, out)
    return results
