"""Building blocks shared by RBN, its teachers and baselines (on top of compressai layers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def deconv3x3(in_ch: int, out_ch: int, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed 3x3 convolution that exactly doubles (stride 2) the spatial size."""
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel_size=3, stride=stride, padding=1, output_padding=stride - 1
    )


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (RCAN, Zhang et al. 2018)."""

    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, ch, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.body(x)


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv, channel attention, skip."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1),
            ChannelAttention(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCAG(nn.Module):
    """Residual channel attention group as in LiteISPNet: RCABs, a closing conv, a long skip."""

    def __init__(self, ch: int, n_blocks: int = 2):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(ch) for _ in range(n_blocks)], nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def run_recording(layers: nn.ModuleList, x: Tensor, record: list[Tensor] | None) -> Tensor:
    """Run layers in order; append the output of every convolution to `record` (for distillation)."""
    for layer in layers:
        x = layer(x)
        if record is not None and isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, RCAG)):
            record.append(x)
    return x


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of (B, C, H, W) to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
