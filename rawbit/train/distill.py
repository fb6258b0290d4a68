"""Knowledge distillation (paper eq. 1-4): attention transfer from the two teachers."""

from __future__ import annotations

import torch
from torch import Tensor

from ..nets import RBN
from ..nets.weights import load as load_weights
from .losses import attention_transfer, kd_progress, kd_weight


def load_teachers(cfg: dict, dev: torch.device) -> dict[str, RBN]:
    teachers = {}
    for key in ("teacher_comp", "teacher_isp"):
        if cfg.get(key):
            t, _ = load_weights(cfg[key])
            teachers[key] = t.to(dev).eval().requires_grad_(False)
    return teachers


def kd_loss(teachers, out_s, b, q: Tensor, step: int, cfg: dict, n_train: int) -> Tensor:
    """Eq. 2–4: encoder maps follow the compression teacher's, decoder maps the ISP teacher's."""
    k = kd_progress(step, cfg["kd_unit"], cfg["batch_size"], n_train)
    total = out_s.x_hat.new_zeros(())
    with torch.no_grad():
        comp, isp = teachers.get("teacher_comp"), teachers.get("teacher_isp")
        t_enc = comp(b["raw"], _teacher_q(comp, q), b["wb"], b["cam_to_srgb"], record=True) if comp else None
        t_dec = isp(b["srgb"], _teacher_q(isp, q), record=True) if isp else None
    if t_enc is not None:
        total = total + kd_weight(cfg["kd_alpha_enc"], cfg["kd_gamma"], k) * attention_transfer(
            out_s.enc_features, t_enc.enc_features)
    if t_dec is not None:
        total = total + kd_weight(cfg["kd_alpha_dec"], cfg["kd_gamma"], k) * attention_transfer(
            out_s.dec_features, t_dec.dec_features)
    return total


def _teacher_q(teacher: RBN, q: Tensor) -> Tensor:
    # Paper teachers are one model per lambda; a variable-rate teacher follows the student's rate.
    return q if teacher.n_rates > 1 else torch.zeros_like(q)
