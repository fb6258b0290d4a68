"""What each `--quality` of a model means: one of its learned rate points, or a layer over one.

For a model that codes RAW photos into photos, with at least detail.BASE rate points (the shipped
ones), the qualities rise in rate and in PSNR on every real test photo measured (docs/bench.md):

    1 .. BASE                 the learned rate points 1 .. BASE (with a correction filter)
    BASE + 1 .. + len(STEPS)  rate point BASE + a detail layer (rawbit/detail.py), coarsest first
    then len(SHIFTS) more     an archive layer (rawbit/archive.py): the sensor data within a bound

The learned points above BASE stay in the model (training uses them) but no quality names them:
over the same bits the detail layer gives more (Nikon D1: rate point 11 33.4 dB at 1.17 bpp; point
6 + detail step 22, 36.9 dB at 1.15). Other models offer their rate points only, and so does any
model asked for its learned points alone (`learned_only`: what the network gives without a filter
or a layer, for research and the paper's comparison). Every setting but an archive one carries a
correction filter when it pays for its bytes (rawbit/correction.py)."""

from __future__ import annotations

import dataclasses

import torch

from . import archive, detail


@dataclasses.dataclass(frozen=True)
class Setting:
    rate: int  # the learned layer's rate point, 1-based
    detail_step: int = 0  # > 0: a detail layer of this step (8-bit units)
    archive_shift: int = 0  # > 0: an archive layer of step 2**-shift


def settings(model: torch.nn.Module, learned_only: bool = False) -> list[Setting]:
    """The model's qualities in order: settings(model)[quality - 1]."""
    n = model.n_rates
    if learned_only or not archive.levels(model):
        return [Setting(r) for r in range(1, n + 1)]
    if n < detail.BASE:
        learned = [Setting(r) for r in range(1, n + 1)]
        details: list[Setting] = []
    else:
        learned = [Setting(r) for r in range(1, detail.BASE + 1)]
        details = [Setting(detail.BASE, detail_step=s) for s in detail.STEPS]
    base = max(1, n - archive.BASE_BELOW_TOP)
    return learned + details + [Setting(base, archive_shift=s) for s in archive.SHIFTS]


def describe(model: torch.nn.Module, learned_only: bool = False) -> str:
    """The model's qualities in words, for an error message."""
    kinds: dict[str, list[int]] = {}
    for q, s in enumerate(settings(model, learned_only), 1):
        kind = "detail settings" if s.detail_step else "archive settings" if s.archive_shift else "rate points"
        kinds.setdefault(kind, []).append(q)
    parts = [f"{k} {v[0]} to {v[-1]}" if len(v) > 1 else f"{k[:-1]} {v[0]}" for k, v in kinds.items()]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
