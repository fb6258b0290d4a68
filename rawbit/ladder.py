"""What each `--quality` of a model means: one of its learned rate points, or a layer over one.

For a model that codes RAW photos into photos, with at least detail.BASE rate points (the shipped
ones), the qualities rise in PSNR on every real test photo measured, and in rate: a quality that
may be coded other ways takes none cheaper than the learned point below it or dearer than the one
above it (Setting.floor, .ceiling; before stop 29 the Kodak DC50's layers at 4 and 7 undercut
points 3 and 6):

    1 .. BASE                 the learned rate points 1 .. BASE (with a correction filter); at
                              the qualities in detail.BELOW, or a coarse detail layer over a lower
                              point, whichever codes the photo best (and at BASE too, at the
                              `best` effort: detail.BELOW_BEST)
    BASE + 1 .. + len(STEPS)  a detail layer (rawbit/detail.py), coarsest first, over rate point
                              BASE or one of detail.OTHER_BASES, whichever codes the photo best;
                              the finest, where its file would outgrow the archive setting above,
                              an archive layer a step coarser (Setting.archive_above)
    then len(SHIFTS) more     an archive layer (rawbit/archive.py): the sensor data within a bound

The learned points above BASE stay in the model (training uses them) but no quality names them:
over the same bits the detail layer gives more (Nikon D1: rate point 11 33.4 dB at 1.17 bpp; point
6 + detail step 22, 36.9 dB at 1.15). Other models offer their rate points only, and so does any
model asked for its learned points alone (`learned_only`: what the network gives without a filter
or a layer, for research and the paper's comparison). Every setting but an archive one carries a
correction filter when it pays for its bytes (rawbit/correction.py)."""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from . import DEFAULT_EFFORT, EFFORTS, archive, detail
from .errors import RawbitError


@dataclasses.dataclass(frozen=True)
class Setting:
    rate: int  # the learned layer's rate point, 1-based
    detail_step: int = 0  # > 0: a detail layer of this step (8-bit units)
    # Other ways to code this quality, (rate point, detail step or 0), that the encoder weighs
    # against this one on each photo, keeping whichever trades PSNR for bits best (rd_score).
    alternatives: tuple[tuple[int, int], ...] = ()
    archive_shift: int = 0  # > 0: an archive layer of step 2**-shift
    # > 0: the learned points of the qualities below and above, when they are one alone, between
    # whose files this one's must fall: a way whose trial costs fewer bits than the floor's or more
    # than the ceiling's, or gives a lower PSNR than the floor's or a higher than the ceiling's, is
    # not taken, so a higher quality never makes a smaller file or a worse photo (the Kodak DC50's
    # coarse layers at 4 and 7 undercut points 3 and 6 before stop 29; kodim15's layer at 4 cost
    # more than point 3 for 0.05 dB less at stop 29; docs/bench.md).
    floor: int = 0
    ceiling: int = 0
    # (rate point, shift) of the archive setting above the finest detail setting: where the photo's
    # detail file would be larger than that archive file, the detail step is the worse tool for it
    # (noise and fine texture the archive layer codes more cheaply on the sensor planes: the Kodak
    # kodim02 made 5.60 bpp at 38.3 dB at quality 12, 5.08 at 38.8 at 13 before stop 30), and the
    # quality is coded as an archive layer a step coarser (2**-(shift - 1)) over the same point.
    archive_above: tuple[int, int] = ()

    def ways(self) -> list[tuple[int, int]]:
        return [(self.rate, self.detail_step), *self.alternatives]


# What each of the encoder's efforts (`rawbit encode --effort`, rawbit.EFFORTS) weighs; the files
# all decode the same way, whatever effort made them:
#   fast    each quality's first way alone, no trial (the detail layer over BASE, the learned point)
#   normal  every way in detail.BELOW and OTHER_BASES; the default (quality 6) stays the learned point
#   best    also a coarse layer at the default (quality 6), detail.BELOW_BEST (~5x its encode on
#           a 12 MP photo)


def _ways(effort: str) -> tuple[dict[int, tuple[int, tuple[int, ...]]], tuple[int, ...]]:
    """(the qualities up to detail.BASE that may be a layer: quality -> (step, lower points), the
    other bases of the detail settings) that `effort` weighs."""
    if effort not in EFFORTS:
        raise RawbitError(f"effort {effort!r} is not one of {', '.join(EFFORTS)}")
    if effort == "fast":
        return {}, ()
    return (detail.BELOW_BEST if effort == "best" else detail.BELOW), detail.OTHER_BASES


def effort_id(effort: str) -> str:
    """What `effort` weighs, as a short digest: benchmark caches key on it (a changed table is a
    new curve, whatever the effort is called)."""
    return hashlib.sha256(repr(_ways(effort)).encode()).hexdigest()[:8]


def settings(model: torch.nn.Module, learned_only: bool = False, effort: str = DEFAULT_EFFORT) -> list[Setting]:
    """The model's qualities in order: settings(model)[quality - 1], with the ways `effort` weighs."""
    below, others = _ways(effort)
    n = model.n_rates
    if learned_only or not archive.levels(model):
        return [Setting(r) for r in range(1, n + 1)]
    if n < detail.BASE:
        learned = [Setting(r) for r in range(1, n + 1)]
        details: list[Setting] = []
    else:
        learned = [
            Setting(r, alternatives=tuple((b, below[r][0]) for b in below[r][1])) if r in below
            else Setting(r) for r in range(1, detail.BASE + 1)
        ]  # fmt: skip
        details = [Setting(detail.BASE, detail_step=s, alternatives=tuple((b, s) for b in others)) for s in detail.STEPS]
    base = max(1, n - archive.BASE_BELOW_TOP)
    offered = learned + details + [Setting(base, archive_shift=s) for s in archive.SHIFTS]
    # A quality that weighs other ways is held between its neighbours where they are learned points
    # alone (their first ways: what they are at every effort).
    alone = [not (s.detail_step or s.archive_shift) for s in offered]
    for q, s in enumerate(offered):
        if s.alternatives:
            floor = offered[q - 1].rate if q > 0 and alone[q - 1] else 0
            ceiling = offered[q + 1].rate if q + 1 < len(offered) and alone[q + 1] else 0
            offered[q] = dataclasses.replace(s, floor=floor, ceiling=ceiling)
    if details and effort != "fast":  # a trial, as the alternatives are
        finest = len(learned) + len(details) - 1
        above = offered[finest + 1]
        offered[finest] = dataclasses.replace(offered[finest], archive_above=(above.rate, above.archive_shift))
    return offered


def check(model: torch.nn.Module, quality: int, learned_only: bool = False, effort: str = DEFAULT_EFFORT) -> Setting:
    """What a quality the model offers means, else the one error every caller gives for it."""
    offered = settings(model, learned_only, effort)
    if not 1 <= quality <= len(offered):
        raise RawbitError(f"quality {quality} is out of range: this model has {describe(model, learned_only)}")
    return offered[quality - 1]


def describe(model: torch.nn.Module, learned_only: bool = False) -> str:
    """The model's qualities in words, for an error message: each run of one kind of setting."""
    runs: list[tuple[str, int, int]] = []
    for q, s in enumerate(settings(model, learned_only), 1):
        kind = "detail settings" if s.detail_step else "archive settings" if s.archive_shift else "rate points"
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], q)
        else:
            runs.append((kind, q, q))
    parts = [f"{k} {a} to {b}" if b > a else f"{k[:-1]} {a}" for k, a, b in runs]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
