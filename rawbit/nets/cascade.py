"""The cascaded structure (the paper's CS, §3.1): an ISP-Net renders the RAW, an sRGB codec codes it.

The encoder runs both networks; the decoder runs only the codec's decoder, so a CS file decodes as
fast as an sRGB codec's. One module holding both, so `rawbit encode --model` and `rawbit bench
--models` take a cascade like any other model, and CS+JT (§4.1: the ISP-Net fine-tuned through the
frozen codec) is a training run of it with `--set 'freeze=["comp"]'`. `compose` makes one from two
trained networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from .isp_net import ISPNet, ISPNetConfig
from .rbn import RBN, RBNConfig


@dataclass(frozen=True)
class CascadeConfig:
    arch: str = "cascade"
    isp: dict = field(default_factory=dict)  # an ISPNetConfig
    comp: dict = field(default_factory=dict)  # an RBNConfig with sRGB input and output

    @property
    def input(self) -> str:
        return self.isp.get("input", "camera")

    @property
    def output(self) -> str:
        return "srgb"

    @property
    def latent_stride(self) -> int:
        return RBNConfig.from_dict(self.comp).latent_stride

    @property
    def lambdas(self) -> tuple[float, ...]:
        return RBNConfig.from_dict(self.comp).lambdas

    def to_dict(self) -> dict:
        return {"arch": self.arch, "isp": ISPNetConfig.from_dict(self.isp).to_dict(),
                "comp": RBNConfig.from_dict(self.comp).to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> "CascadeConfig":
        d = dict(d)
        comp = dict(d.get("comp", {}))
        if "lambdas" in d:  # a run's rate points are the codec's
            comp["lambdas"] = tuple(d.pop("lambdas"))
        isp = ISPNetConfig.from_dict(d.get("isp", {})).to_dict()
        comp = RBNConfig.from_dict(comp).to_dict()
        if comp["input"] != "srgb" or comp["output"] != "srgb":
            raise ValueError("a cascade's codec codes sRGB images (input and output srgb)")
        return cls(arch=d.get("arch", "cascade"), isp=isp, comp=comp)


class Cascade(nn.Module):
    """ISP-Net then an sRGB RBN-family codec, behind the interface codec.py and training use."""

    def __init__(self, config: CascadeConfig):
        super().__init__()
        self.config = config
        self.isp = ISPNet(ISPNetConfig.from_dict(config.isp))
        self.comp = RBN(RBNConfig.from_dict(config.comp))

    # --- what codec.py asks of a model ------------------------------------------------------------
    @property
    def g_a(self) -> nn.ModuleList:  # the transforms codec.py moves to the device: both encoders
        return nn.ModuleList([self.isp, self.comp.g_a])

    @property
    def g_s(self) -> nn.Module:
        return self.comp.g_s

    @property
    def latent_codec(self) -> nn.Module:
        return self.comp.latent_codec

    @property
    def n_rates(self) -> int:
        return self.comp.n_rates

    @property
    def needs_colour(self) -> bool:
        return False

    @property
    def input_multiple(self) -> int:  # in packed RAW pixels: the codec's sRGB multiple halved
        return max(self.comp.input_multiple // 2, self.isp.input_multiple)

    def pad(self, x: Tensor) -> Tensor:
        from .blocks import pad_to_multiple

        return pad_to_multiple(x, self.input_multiple)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        return self.comp.latent_size(height, width)

    @property
    def analysis_halo(self) -> None:
        """None: the ISP-Net's channel attention pools the whole image, so no tile of it is exact."""
        return None

    def render(self, x: Tensor, wb: Tensor | None, cam_to_srgb: Tensor | None) -> Tensor:
        """The ISP-Net's sRGB image, as the codec receives it (the [0, 1] range of a photo)."""
        return self.isp.render(x, wb, cam_to_srgb).clamp(0.0, 1.0)

    def analyze(self, x: Tensor, wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
                record: list[Tensor] | None = None) -> Tensor:  # fmt: skip
        return self.comp.analyze(self.render(x, wb, cam_to_srgb), record=record)

    def synthesize(self, y_hat: Tensor, record: list[Tensor] | None = None, **colour) -> Tensor:
        return self.comp.synthesize(y_hat, record)

    def compress_latent(self, y: Tensor, q: int, exact: bool = True, y_hat: bool = False):
        return self.comp.compress_latent(y, q, exact, y_hat)

    def decompress_latent(self, streams, y_size: tuple[int, int], q: int, exact: bool = True) -> Tensor:
        return self.comp.decompress_latent(streams, y_size, q, exact)

    # --- training and export ----------------------------------------------------------------------
    def forward(self, x: Tensor, q: Tensor | int, wb: Tensor | None = None,
                cam_to_srgb: Tensor | None = None, record: bool = False):  # fmt: skip
        return self.comp(self.render(x, wb, cam_to_srgb), q, record=record)

    def update(self, force: bool = False) -> bool:
        return self.comp.update(force=force)

    def aux_loss(self) -> Tensor:
        return self.comp.aux_loss()


def compose(isp_weights: str | Path, comp_weights: str | Path, out: str | Path) -> str:
    """A cascade weights file from a trained ISP-Net and a trained sRGB codec; returns its model id."""
    from ..errors import ModelError
    from . import weights

    isp, _ = weights.load(isp_weights)
    comp, _ = weights.load(comp_weights)
    if not isinstance(isp, ISPNet) or not isinstance(comp, RBN):
        raise ModelError(f"a cascade is an ISP-Net ({isp_weights}) and an sRGB codec ({comp_weights})")
    model = Cascade(CascadeConfig.from_dict({"isp": isp.config.to_dict(), "comp": comp.config.to_dict()}))
    model.isp.load_state_dict(isp.state_dict())
    weights.resize_cdf_buffers(model.comp, comp.state_dict())
    model.comp.load_state_dict(comp.state_dict())
    return weights.export(model, out)
