"""Regression check for CI: did a codec's bpp rise or its PSNR fall beyond tolerance at any rate point?"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import RawbitError


@dataclass(frozen=True)
class Tolerance:
    """Allowed bpp rise (absolute bpp, or a fraction of the baseline when `relative`) and PSNR fall (dB)."""

    bpp: float = 0.01
    bpp_relative: bool = True
    psnr: float = 0.05

    def bpp_limit(self, baseline: float) -> float:
        """Highest bpp that still passes against `baseline`."""
        return baseline * (1 + self.bpp) if self.bpp_relative else baseline + self.bpp


def load_baseline(path: str | Path) -> tuple[dict[str, dict], dict[str, str] | None]:
    """Codec results and image hashes from a bench.json, or one codec's CompressAI-style JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RawbitError(f"{path}: cannot read baseline ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("codecs"), dict):
        return data["codecs"], data.get("images")
    if isinstance(data, dict) and "name" in data and "results" in data:
        return {data["name"]: data}, None
    raise RawbitError(f"{path}: not a bench.json nor a CompressAI-style results JSON")


def _points(entry: dict) -> dict[object, tuple[float | None, float | None]]:
    # Match rate points by quality when both sides recorded it (a sweep may gain points), else
    # by position (plain CompressAI files have no quality).
    r = entry["results"]
    keys = r.get("quality") or list(range(len(r["bpp"])))
    return {k: (b, p) for k, b, p in zip(keys, r["bpp"], r["psnr-rgb"])}


def check(current: dict[str, dict], baseline: dict[str, dict], tolerance: Tolerance,
          current_images: dict[str, str] | None = None,
          baseline_images: dict[str, str] | None = None,
          qualities: set[int] | None = None) -> tuple[list[str], list[str]]:
    """(failures, passes): one line per rate point of every codec in both runs; `qualities`: only
    the baseline's points at these qualities (a run that benched a subset of them)."""
    failures: list[str] = []
    passes: list[str] = []
    if current_images is not None and baseline_images is not None:
        if sorted(current_images.values()) != sorted(baseline_images.values()):
            # Different photos give different numbers: the comparison itself would be wrong.
            failures.append("the images differ from the baseline's (content hashes)")
    common = [name for name in baseline if name in current]
    if not common:
        failures.append(f"no codec of the baseline ({', '.join(baseline)}) was benched")
    for name in common:
        now, base = _points(current[name]), _points(baseline[name])
        by_quality = "quality" in current[name]["results"] and "quality" in baseline[name]["results"]
        for key, (b_bpp, b_psnr) in base.items():
            if qualities is not None and by_quality and key not in qualities:
                continue
            where = f"{name} {'q' if by_quality else '#'}{key}"
            if key not in now:
                failures.append(f"{where}: rate point missing")
                continue
            bpp, psnr = now[key]
            if bpp is None:
                failures.append(f"{where}: no result")
                continue
            psnr = math.inf if psnr is None else psnr  # JSON null PSNR = identical images
            problems = []
            if b_bpp is not None and bpp > tolerance.bpp_limit(b_bpp):
                problems.append(f"bpp {b_bpp:.4f} -> {bpp:.4f}")
            # A null baseline PSNR means lossless (inf): anything finite is then a fall.
            b_psnr_value = math.inf if b_psnr is None else b_psnr
            if psnr < b_psnr_value - tolerance.psnr:
                problems.append(f"PSNR {b_psnr_value:.3f} -> {psnr:.3f} dB")
            (failures if problems else passes).append(
                f"{where}: {'; '.join(problems) if problems else f'bpp {bpp:.4f}, PSNR {psnr:.3f} dB'}")
    return failures, passes
