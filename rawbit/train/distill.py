"""Knowledge distillation (paper eq. 1-4): attention transfer from the two teachers.

The encoder's attention maps follow the compression teacher's, the decoder's the ISP teacher's.
Teachers given with zero weights (kd_alpha_enc = kd_alpha_dec = 0) teach nothing but are still
measured at every validation (`val_at_enc`, `val_at_dec`): the attention-loss curves of a run
without KD, the paper's Fig. 6(c, d).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import RawbitError
from ..nets import RBN
from ..nets.weights import load as load_weights
from .losses import attention_transfer, kd_progress, kd_weight


class KDTerms(NamedTuple):
    loss: Tensor  # what is added to the rate-distortion loss: alpha_enc * at_enc + alpha_dec * at_dec
    at_enc: Tensor  # unweighted attention loss, encoder vs compression teacher (0 without one)
    at_dec: Tensor  # decoder vs ISP teacher
    k: float  # eq. 3's k at this step, in kd_unit


def load_teachers(cfg: dict, dev: torch.device) -> dict[str, RBN]:
    absolute_maps(cfg)  # a misspelt kind fails before the first step, not after loading
    teachers = {}
    for key in ("teacher_comp", "teacher_isp"):
        if cfg.get(key):
            t, _ = load_weights(cfg[key])
            teachers[key] = t.to(dev).eval().requires_grad_(False)
    return teachers


def attention_losses(teachers: dict[str, RBN], out_s, b: dict[str, Tensor], q: Tensor, absolute: bool) -> tuple[Tensor, Tensor]:
    """Eq. 2 without the weights, for the encoder and the decoder (zero where no teacher)."""
    zero = out_s.x_hat.new_zeros(())
    comp, isp = teachers.get("teacher_comp"), teachers.get("teacher_isp")
    with torch.no_grad():
        t_enc = comp(b["raw"], _teacher_q(comp, q), b["wb"], b["cam_to_srgb"], record=True) if comp else None
        t_dec = isp(b["srgb"], _teacher_q(isp, q), record=True) if isp else None
    at_enc = attention_transfer(out_s.enc_features, t_enc.enc_features, absolute) if t_enc else zero
    at_dec = attention_transfer(out_s.dec_features, t_dec.dec_features, absolute) if t_dec else zero
    return at_enc, at_dec


def kd_loss(teachers, out_s, b, q: Tensor, step: int, cfg: dict, n_train: int) -> KDTerms:
    """Eq. 2–4 at a training step; `n_train` photos make an epoch (kd_unit "epoch")."""
    k = kd_progress(step, cfg["kd_unit"], cfg["batch_size"], n_train)
    w_enc = kd_weight(cfg["kd_alpha_enc"], cfg["kd_gamma"], k) if "teacher_comp" in teachers else 0.0
    w_dec = kd_weight(cfg["kd_alpha_dec"], cfg["kd_gamma"], k) if "teacher_isp" in teachers else 0.0
    zero = out_s.x_hat.new_zeros(())
    if w_enc == 0 and w_dec == 0:  # measured at validation only: no teacher forward per step
        return KDTerms(zero, zero, zero, k)
    at_enc, at_dec = attention_losses(teachers, out_s, b, q, absolute_maps(cfg))
    return KDTerms(w_enc * at_enc + w_dec * at_dec, at_enc.detach(), at_dec.detach(), k)


def absolute_maps(cfg: dict) -> bool:
    """Whether the attention maps are |.| sums (kd_attention "abs") rather than eq. 1's signed ones."""
    kind = cfg.get("kd_attention", "signed")
    if kind not in ("signed", "abs"):
        raise RawbitError(f"kd_attention is signed or abs, not {kind!r}")
    return kind == "abs"


def _teacher_q(teacher: RBN, q: Tensor) -> Tensor:
    # Paper teachers are one model per lambda; a variable-rate teacher follows the student's rate.
    return q if teacher.n_rates > 1 else torch.zeros_like(q)
