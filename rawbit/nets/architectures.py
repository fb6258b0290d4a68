"""Which class builds which network: every preset, weights file and checkpoint names its `arch`."""

from __future__ import annotations

from torch import nn

from .cascade import Cascade, CascadeConfig
from .isp_net import ISPNet, ISPNetConfig
from .rbn import RBN, RBNConfig

ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "rbn": (RBN, RBNConfig),
    "isp-net": (ISPNet, ISPNetConfig),
    "cascade": (Cascade, CascadeConfig),
}


def config_from_dict(d: dict):
    """The config dataclass a dict describes (ValueError for an unknown architecture)."""
    arch = d.get("arch", "rbn")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch][1].from_dict(d)


def build(config) -> nn.Module:
    """A freshly initialised network for a config (dataclass or dict)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    return ARCHITECTURES[config.arch][0](config)
