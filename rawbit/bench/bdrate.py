"""Bjøntegaard deltas between two RD curves: a thin wrapper over the `bjontegaard` package."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Akima interpolation is what the bjontegaard package recommends over the original cubic fit
# (no overshoot between points); JVET's CTC uses the closely related piecewise cubic (pchip).
METHOD = "akima"


@dataclass(frozen=True)
class BD:
    """BD-rate (% of the anchor's rate; negative = test saves bits) and BD-PSNR (dB; positive = better)."""

    rate: float
    psnr: float
    overlap_psnr: float  # share of the PSNR range both curves cover (BD-rate integrates over it)
    overlap_rate: float  # share of the log-rate range both cover (BD-PSNR integrates over it)


def _curve(rate: Sequence[float], dist: Sequence[float], by: str) -> tuple[np.ndarray, np.ndarray]:
    # The package interpolates along one axis and needs it strictly monotonic: keep finite points,
    # sort along that axis, drop repeats (e.g. two qualities that give the same file).
    r, d = np.asarray(rate, float), np.asarray(dist, float)
    keep = np.isfinite(r) & np.isfinite(d) & (r > 0)
    r, d = r[keep], d[keep]
    axis = d if by == "dist" else r
    order = np.argsort(axis, kind="stable")
    r, d, axis = r[order], d[order], axis[order]
    first = np.concatenate([[True], np.diff(axis) > 0]) if len(axis) else np.zeros(0, bool)
    return r[first], d[first]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return 0.0
    total = max(a.max(), b.max()) - min(a.min(), b.min())
    both = min(a.max(), b.max()) - max(a.min(), b.min())
    return max(both, 0.0) / total if total > 0 else 0.0


def _delta(fn, anchor: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    if min(len(anchor[0]), len(test[0])) < 2:
        return math.nan
    with warnings.catch_warnings():
        # Overlap is reported next to the value instead of a warning on stderr per pair.
        warnings.simplefilter("ignore")
        try:
            value = fn(*anchor, *test, method=METHOD, require_matching_points=False, min_overlap=0)
        except (ValueError, AssertionError):  # non-monotonic curve: no meaningful delta
            return math.nan
    return float(value)


def bd_rate(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float],
            test_bpp: Sequence[float], test_psnr: Sequence[float]) -> float:
    """BD-rate of test against anchor in percent (NaN when the PSNR ranges do not overlap)."""
    from bjontegaard import bd_rate as _bd_rate

    return _delta(_bd_rate, _curve(anchor_bpp, anchor_psnr, "dist"), _curve(test_bpp, test_psnr, "dist"))


def bd_psnr(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float],
            test_bpp: Sequence[float], test_psnr: Sequence[float]) -> float:
    """BD-PSNR of test against anchor in dB (NaN when the rate ranges do not overlap)."""
    from bjontegaard import bd_psnr as _bd_psnr

    return _delta(_bd_psnr, _curve(anchor_bpp, anchor_psnr, "rate"), _curve(test_bpp, test_psnr, "rate"))


def bd(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float],
       test_bpp: Sequence[float], test_psnr: Sequence[float]) -> BD:
    """Both deltas and the overlaps they were integrated over."""
    a_by_d, t_by_d = _curve(anchor_bpp, anchor_psnr, "dist"), _curve(test_bpp, test_psnr, "dist")
    a_by_r, t_by_r = _curve(anchor_bpp, anchor_psnr, "rate"), _curve(test_bpp, test_psnr, "rate")
    return BD(
        rate=bd_rate(anchor_bpp, anchor_psnr, test_bpp, test_psnr),
        psnr=bd_psnr(anchor_bpp, anchor_psnr, test_bpp, test_psnr),
        overlap_psnr=_overlap(a_by_d[1], t_by_d[1]),
        overlap_rate=_overlap(np.log10(a_by_r[0]), np.log10(t_by_r[0])) if len(a_by_r[0]) and len(t_by_r[0]) else 0.0,
    )


def psnr_gap(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float], bpp: float, psnr: float) -> float:
    """PSNR minus the anchor's PSNR at the same bpp (dB; positive = better than the anchor there).

    The anchor is interpolated linearly in log-rate between its two neighbouring points, so the
    answer is only as fine as its sweep (hence JPEG's dense low qualities); NaN outside its range,
    where nothing was measured to compare with.
    """
    r, d = _curve(anchor_bpp, anchor_psnr, "rate")
    if len(r) < 2 or not (math.isfinite(bpp) and math.isfinite(psnr)) or not r[0] <= bpp <= r[-1]:
        return math.nan
    return float(psnr - np.interp(math.log(bpp), np.log(r), d))
