"""The classical ISP, differentiable: LibRaw's own pipeline for the reference settings, in torch.

`render.py` is the one definition of the target (LibRaw, AHD). This module is the differentiable
twin of its colour path with LibRaw's *bilinear* demosaic (`LINEAR`), so that a decoder can render
sensor planes the way LibRaw would and learn only what AHD and the network see beyond bilinear::

    packed RGGB (B, 4, h, w) in [0, 1]  (black-subtracted, / (white - black): rawbit.raw.read_raw)
      -> x white balance, clip at 1                  (LibRaw scale_colors, highlight mode 0)
      -> bilinear demosaic to (B, 3, 2h, 2w)          (LibRaw lin_interpolate + border_interpolate)
      -> camera RGB -> linear sRGB, clip to [0, 1]   (LibRaw convert_to_rgb with rgb_cam)
      -> BT.709 curve, power 1/2.222, toe slope 4.5  (LibRaw gamma_curve, mode 2, imax 0x10000)
      -> 8-bit: floor(256 * curve)                   (LibRaw's 16-bit curve, then >> 8)

What LibRaw does that one might not expect, and this module mirrors:
- White balance is normalised to the *smallest* multiplier (highlight mode 0, "clip"), so every
  gain is >= 1 and each channel is clipped at full scale *before* demosaicing: a blown highlight
  becomes pure white instead of turning magenta.
- Both greens are one colour by the time LibRaw demosaics (four_color_rgb is off): a green
  photosite's red and blue come from its 2 neighbours of that colour, and a red or blue one's
  green from all 4 edge neighbours, G1 and G2 alike.
- Inside the image lin_interpolate weighs edge neighbours 2 and diagonal ones 1, but for any Bayer
  site the neighbours of one colour are all edge or all diagonal, so it is the plain mean of the
  same-coloured sites in the 3x3 window. border_interpolate takes the same mean over the
  neighbours that exist, so one formula (sum / count with zero padding) covers the frame too.
- 8-bit output *truncates*: the curve is a 16-bit table and the byte is its top 8 bits, so LibRaw's
  8-bit value is floor(256 * curve(v)), not round(255 * curve(v)). `render` returns the float that
  rounds to that byte, (256 * curve - 0.5) / 255, so a loss against the 8-bit reference / 255 sees
  no half-level bias.
- The curve's toe is solved numerically (LibRaw bisects for the point where power and linear
  segments meet with equal slope), so its constants are not the textbook 0.018 / 0.099.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .raw import GAMMA_OFFSET as _OFFSET, GAMMA_POWER, GAMMA_SLOPE, GAMMA_TOE as _TOE


def gamma_curve(x: Tensor) -> Tensor:
    """Linear [0, 1] -> LibRaw's output curve in [0, 1) (before its 16-bit and 8-bit truncation)."""
    power = (1 + _OFFSET) * x.clamp_min(_TOE) ** GAMMA_POWER - _OFFSET
    return torch.where(x < _TOE, x * GAMMA_SLOPE, power)


def gamma_curve_inverse(y: Tensor) -> Tensor:
    """`gamma_curve`'s inverse: LibRaw's output curve in [0, 1] -> linear [0, 1]."""
    linear = ((y.clamp_min(_TOE * GAMMA_SLOPE) + _OFFSET) / (1 + _OFFSET)) ** (1 / GAMMA_POWER)
    return torch.where(y < _TOE * GAMMA_SLOPE, y / GAMMA_SLOPE, linear)


def white_balance(packed: Tensor, wb: Tensor) -> Tensor:
    """(B, 4, h, w) linear RGGB x gains (B, 4), clipped at full scale as LibRaw clips it."""
    return (packed * wb[:, :, None, None]).clamp(0.0, 1.0)


def demosaic_bilinear(planes: Tensor) -> Tensor:
    """(B, 4, h, w) R, G1, G2, B planes -> (B, 3, 2h, 2w) linear RGB, LibRaw's LINEAR demosaic."""
    b, _, h, w = planes.shape
    mosaic = F.pixel_shuffle(planes, 2)  # (B, 1, 2h, 2w), R at (0, 0), B at (1, 1)
    masks = _cfa_masks(2 * h, 2 * w, planes)  # (3, 2h, 2w) for R, G, B
    ones = planes.new_ones(1, 1, 3, 3)
    counts = F.conv2d(masks[:, None], ones, padding=1)  # (3, 1, 2h, 2w) sites of a colour in 3x3
    sums = F.conv2d((mosaic * masks).reshape(b * 3, 1, 2 * h, 2 * w), ones, padding=1)
    means = sums.reshape(b, 3, 2 * h, 2 * w) / counts.reshape(1, 3, 2 * h, 2 * w).clamp_min(1)
    # A site keeps its own sample; its other colours are the means of their neighbours.
    return torch.where(masks.bool(), mosaic, means)


def _cfa_masks(height: int, width: int, like: Tensor) -> Tensor:
    r = torch.zeros(height, width, dtype=like.dtype, device=like.device)
    b = torch.zeros_like(r)
    r[0::2, 0::2] = 1
    b[1::2, 1::2] = 1
    return torch.stack([r, 1 - r - b, b])


def camera_to_srgb(rgb: Tensor, cam_to_srgb: Tensor) -> Tensor:
    """(B, 3, H, W) camera RGB x (B, 3, 3) matrix -> linear sRGB, clipped to [0, 1]."""
    return torch.einsum("bij,bjhw->bihw", cam_to_srgb.to(rgb.dtype), rgb).clamp(0.0, 1.0)


def render(packed: Tensor, wb: Tensor, cam_to_srgb: Tensor) -> Tensor:
    """(B, 4, h, w) linear RGGB -> (B, 3, 2h, 2w) sRGB on the 8-bit/255 scale: LibRaw LINEAR."""
    return render_balanced(white_balance(packed, wb), cam_to_srgb)


def render_balanced(balanced: Tensor, cam_to_srgb: Tensor) -> Tensor:
    """`render` from planes already white-balanced and clipped (what a decoder reconstructs)."""
    linear = camera_to_srgb(demosaic_bilinear(balanced), cam_to_srgb)
    return (256.0 * gamma_curve(linear) - 0.5) / 255.0


def unrender(srgb: Tensor, cam_to_srgb: Tensor) -> Tensor:
    """(B, 3, 2h, 2w) sRGB on the 8-bit/255 scale -> (B, 4, h, w) white-balanced RGGB planes: the
    colour path of `render_balanced` run backwards, each plane sampled at its own photosites.
    What clipping lost (blown highlights, out-of-gamut colour) stays lost: a prediction, not an
    inverse. Each photosite is taken back on its own (the path is per pixel), so the full-size
    photo is never held in more than its own precision."""
    inverse = torch.linalg.inv(cam_to_srgb.double())
    planes = []
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), (0, 1, 1, 2)):  # R, G1, G2, B
        site = srgb[:, :, dy::2, dx::2].double()
        linear = gamma_curve_inverse(((255.0 * site + 0.5) / 256.0).clamp(0.0, 1.0))
        planes.append(torch.einsum("bj,bjhw->bhw", inverse[:, colour], linear))
    return torch.stack(planes, dim=1).clamp(0.0, 1.0)  # float64 whatever the photo's dtype


def to_uint8(srgb: Tensor) -> np.ndarray:
    """(3, H, W) output of `render` -> (H, W, 3) uint8, the byte LibRaw would write."""
    return (srgb * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def render_raw(raw) -> np.ndarray:
    """A `rawbit.raw.RawImage` -> (H, W, 3) uint8 of the photo through this pipeline, in float64."""
    from .raw import crop_to_photo

    packed = torch.from_numpy(raw.packed).double()[None]
    wb = torch.tensor([raw.meta.wb], dtype=torch.float64)
    ccm = torch.tensor([raw.meta.cam_to_srgb], dtype=torch.float64)
    return to_uint8(crop_to_photo(render(packed, wb, ccm)[0], raw.pad, raw.size))

