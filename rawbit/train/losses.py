"""Training losses: rate–distortion (Minnen et al. / CompressAI) and attention transfer (paper eq. 1–3)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..metrics import likelihood_bits


class RDTerms(NamedTuple):
    loss: Tensor  # mean over the batch of bpp + lambda * 255^2 * MSE
    bpp: Tensor  # (B,) estimated bits per sRGB pixel
    mse: Tensor  # (B,) MSE on the [0, 1] scale


def rd_loss(
    x_hat: Tensor, target: Tensor, likelihoods: dict[str, Tensor], lambdas: Tensor, n_pixels: int
) -> RDTerms:
    """L = R + lambda * D, R in bits per sRGB pixel, D the MSE on the 0-255 scale (CompressAI's convention).

    lambdas is (B,): each sample may train a different rate point of a variable-rate model.
    """
    bpp = likelihood_bits(likelihoods) / n_pixels
    mse = (x_hat - target).pow(2).flatten(1).mean(1)
    loss = (bpp + lambdas * 255.0**2 * mse).mean()
    return RDTerms(loss, bpp, mse)


def attention_map(a: Tensor, absolute: bool = False) -> Tensor:
    """Eq. 1: the signed channel sum (not |.|: these are conv outputs, not ReLUs), L2-normalised.
    `absolute`: the sum of |a| instead (Zagoruyko & Komodakis' map; the paper's ablation, Fig. 6)."""
    m = (a.abs() if absolute else a).sum(dim=1).flatten(1)
    return m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)


def attention_transfer(student: list[Tensor], teacher: list[Tensor], absolute: bool = False) -> Tensor:
    """Eq. 2 without the weights: sum over layer pairs of the mean squared map difference."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers but {len(teacher)} teacher layers")
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"attention maps differ in size: {tuple(s.shape)} vs {tuple(t.shape)}")
        total = total + (attention_map(s, absolute) - attention_map(t.detach(), absolute)).pow(2).mean()
    return total


def kd_weight(alpha0: float, gamma: float, k: float) -> float:
    """Eq. 3: alpha0 * gamma^(k^2).

    The paper calls k the "training epoch". With gamma = 0.99999 the weight halves at k ~ 263, so
    k must be a coarse unit: as an iteration count KD would vanish within a few hundred steps of a
    1M-step run, while as epochs of their 390 training images at batch 8 (~49 steps each) it fades
    over the first ~15k steps, which matches "focus on KD in the initial phase". We therefore use
    epochs of the training set by default; the unit is configurable (kd_unit).
    """
    return alpha0 * math.exp(k * k * math.log(gamma))


def kd_progress(step: int, unit: str, batch_size: int, n_train: int) -> float:
    """The k of eq. 3 for a step: in epochs of the training set, in steps, or in thousands of steps."""
    if unit == "epoch":
        return step * batch_size / max(n_train, 1)
    if unit == "step":
        return float(step)
    if unit == "kstep":
        return step / 1000.0
    raise ValueError(f"unknown kd_unit {unit!r} (epoch, step, kstep)")

