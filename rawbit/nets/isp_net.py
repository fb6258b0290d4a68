"""ISP-Net: a learned camera pipeline without compression (RAW in, sRGB out), after LiteISPNet.

The paper's cascaded structure (§3.1, "CS") runs an ISP-Net and then an sRGB codec; the ISP-Net's
PSNR is the ceiling that cascade cannot pass. Built from the blocks RBN's decoder uses: a U-Net of
RCAGs on the packed RAW with strided convolutions down and transposed convolutions up, skips added,
and a last transposed convolution to the full-size sRGB image (in place of LiteISPNet's inverse
wavelet transform, as in RBN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressai.layers import conv3x3
from torch import Tensor, nn

from .blocks import RCAG, deconv3x3, pad_to_multiple
from .camera_input import camera_input
from .config import NetConfig


@dataclass(frozen=True)
class ISPNetConfig(NetConfig):
    arch: str = "isp-net"
    input: str = "camera"  # "camera" (the file's WB + matrix + gamma first, as rbn-lite) or "plain"
    channels: tuple[int, ...] = (32, 64, 96, 128)  # per U-Net level, finest (packed size) first
    rcab_per_group: int = 2
    # Only the loss weight of its training (bpp is zero): an ISP-Net has no rate points.
    lambdas: tuple[float, ...] = (0.01,)
    output: str = "srgb"
    latent_stride: int = 1


class ISPNet(nn.Module):
    """(B, 4, h, w) packed RAW -> (B, 3, 2h, 2w) sRGB; the training loop's model interface."""

    def __init__(self, config: ISPNetConfig):
        super().__init__()
        self.config = c = config
        ch = c.channels
        self.head = conv3x3(4, ch[0])
        self.down_groups = nn.ModuleList(RCAG(a, c.rcab_per_group) for a in ch[:-1])
        self.downs = nn.ModuleList(conv3x3(a, b, stride=2) for a, b in zip(ch[:-1], ch[1:]))
        self.bottom = RCAG(ch[-1], c.rcab_per_group)
        self.ups = nn.ModuleList(deconv3x3(b, a) for a, b in zip(ch[:-1], ch[1:]))
        self.up_groups = nn.ModuleList(RCAG(a, c.rcab_per_group) for a in ch[:-1])
        self.tail = deconv3x3(ch[0], 3)
        nn.init.constant_(self.tail.bias, 0.5)  # start at mid-grey, as RBN's decoder does

    @property
    def n_rates(self) -> int:
        return 1

    @property
    def input_multiple(self) -> int:
        return 2 ** (len(self.config.channels) - 1)

    def render(self, x: Tensor, wb: Tensor | None = None, cam_to_srgb: Tensor | None = None) -> Tensor:
        """Packed RAW (any size) -> sRGB of twice its size, [0, 1]-ish (not clamped)."""
        h, w = x.shape[-2:]
        if self.config.input == "camera":
            if wb is None or cam_to_srgb is None:
                raise ValueError("this model needs the file's white balance and colour matrix")
            x = camera_input(x, wb, cam_to_srgb)
        f = self.head(pad_to_multiple(x, self.input_multiple))
        skips = []
        for group, down in zip(self.down_groups, self.downs):
            f = group(f)
            skips.append(f)
            f = down(f)
        f = self.bottom(f)
        for up, group, skip in zip(reversed(self.ups), reversed(self.up_groups), reversed(skips)):
            f = group(up(f) + skip)
        return self.tail(f)[..., : 2 * h, : 2 * w]

    def forward(self, x: Tensor, q: Tensor | int = 0, wb: Tensor | None = None,
                cam_to_srgb: Tensor | None = None, record: bool = False):  # fmt: skip
        from .rbn import RBNOutput

        return RBNOutput(self.render(x, wb, cam_to_srgb), {}, [], [])

    # What export and the training loop ask of every network; an ISP-Net has no entropy model.
    def update(self, force: bool = False) -> bool:
        return False

    def aux_loss(self) -> Tensor:
        return torch.zeros(())
