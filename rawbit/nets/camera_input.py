"""Camera-aware input: the file's own white balance, colour matrix and gamma, before the encoder."""

from __future__ import annotations

import torch
from torch import Tensor


def camera_input(packed: Tensor, wb: Tensor, cam_to_srgb: Tensor) -> Tensor:
    """(B, 4, h, w) linear RGGB -> (B, 4, h, w) white-balanced, colour-corrected, gamma-encoded RGGB.

    Linear RAW is dark (mean ~0.09), so its latent starts tiny against the quantisation step; doing
    what LibRaw does first (scale by the as-shot gains, camera->sRGB matrix, BT.709 gamma as in
    LibRaw's default) leaves the network to learn demosaicing and the residual rendering only.
    wb: (B, 4) gains for R, G1, G2, B; cam_to_srgb: (B, 3, 3).
    """
    x = packed * wb[:, :, None, None]
    r, g1, g2, b = x.unbind(1)
    g = 0.5 * (g1 + g2)
    m = cam_to_srgb
    # Each green plane keeps its own sample so no detail is averaged away.
    out_r = m[:, 0, 0, None, None] * r + m[:, 0, 1, None, None] * g + m[:, 0, 2, None, None] * b
    out_b = m[:, 2, 0, None, None] * r + m[:, 2, 1, None, None] * g + m[:, 2, 2, None, None] * b
    g_rb = m[:, 1, 0, None, None] * r + m[:, 1, 2, None, None] * b
    out_g1 = g_rb + m[:, 1, 1, None, None] * g1
    out_g2 = g_rb + m[:, 1, 1, None, None] * g2
    x = torch.stack([out_r, out_g1, out_g2, out_b], dim=1).clamp(0.0, 1.0)
    return _bt709_gamma(x)


def _bt709_gamma(x: Tensor) -> Tensor:
    # LibRaw's default output curve (power 0.45, toe slope 4.5); the clamp keeps the gradient finite.
    return torch.where(x < 0.018, 4.5 * x, 1.099 * x.clamp_min(0.018) ** 0.45 - 0.099)
