"""Validation during training: estimated bpp and PSNR on centre crops of the validation photos."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Sample
from ..nets import RBN
from ..metrics import likelihood_bits, psnr_from_mse as psnr


def model_io(model: RBN, b: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    x = b["srgb"] if model.config.input == "srgb" else b["raw"]
    target = b["raw"] if model.config.output == "raw" else b["srgb"]
    return x, target


def packed_multiple(model) -> int:
    """What RAW patch sizes must be multiples of: input_multiple is in the network's own input
    pixels, and an sRGB network sees twice the packed RAW's size."""
    return model.input_multiple // 2 if model.config.input == "srgb" else model.input_multiple


def forward_batch(model, b: dict[str, Tensor], q: Tensor, record: bool = False):
    x, target = model_io(model.module if hasattr(model, "module") else model, b)
    return model(x, q, b["wb"], b["cam_to_srgb"], record=record), target


@torch.no_grad()
def evaluate(model: RBN, samples: list[Sample], cfg: dict, device: torch.device, teachers: dict | None = None) -> dict[str, float]:
    """Estimated bpp and PSNR on centre crops of the validation photos at low/mid/high rate; with
    teachers, the attention losses against them too (eq. 2 unweighted, averaged over rates and photos)."""
    from .distill import absolute_maps, attention_losses

    model.eval()
    results: dict[str, float] = {}
    qs = [q - 1 for q in cfg.get("val_qualities") or ()]
    qs = qs or sorted({0, model.n_rates // 2, model.n_rates - 1})
    at: list[tuple[float, float]] = []
    for q in qs:
        bpps, psnrs = [], []
        for s in samples[: cfg["val_images"]]:
            b = center_crop(s, cfg["val_crop"] // 2, packed_multiple(model), device)
            qt = torch.tensor([q], device=device)
            out, target = forward_batch(model, b, qt, record=bool(teachers))
            if teachers:
                at.append(tuple(float(a) for a in attention_losses(teachers, out, b, qt, absolute_maps(cfg))))
            n = b["srgb"].shape[-1] * b["srgb"].shape[-2]
            bits = likelihood_bits(out.likelihoods).sum()
            x_hat = (out.x_hat.clamp(0, 1) * 255).round() / 255
            bpps.append(float(bits) / n)
            psnrs.append(float(psnr((x_hat - target).pow(2).mean())))
        results[f"val_bpp_q{q + 1}"] = float(np.mean(bpps)) if bpps else float("nan")
        results[f"val_psnr_q{q + 1}"] = float(np.mean(psnrs)) if psnrs else float("nan")
    if at:
        results["val_at_enc"], results["val_at_dec"] = (float(v) for v in np.mean(at, axis=0))
    model.train()
    return results


def center_crop(s: Sample, half: int, multiple: int, device: torch.device) -> dict[str, Tensor]:
    _, h, w = s.packed.shape
    half = min(half, h, w) // multiple * multiple
    i, j = (h - half) // 2, (w - half) // 2
    srgb = s.srgb[2 * i : 2 * i + 2 * half, 2 * j : 2 * j + 2 * half].transpose(2, 0, 1)
    b = {
        "raw": torch.from_numpy(np.ascontiguousarray(s.packed[:, i : i + half, j : j + half])),
        "srgb": torch.from_numpy(srgb.astype(np.float32) / 255.0),
        "wb": torch.from_numpy(s.wb),
        "cam_to_srgb": torch.from_numpy(s.cam_to_srgb),
    }
    return {k: v.unsqueeze(0).to(device) for k, v in b.items()}
