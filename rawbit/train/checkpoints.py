"""Training checkpoints on disk: atomic save, load, and the network a checkpoint holds."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import RawbitError
from ..files import atomic_writer
from ..nets import RBN, create_model
from ..nets.architectures import build
from ..nets.weights import resize_cdf_buffers

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a crash while saving never leaves a half-written checkpoint behind."""
    with atomic_writer(path, force=True) as f:
        torch.save(state, f)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(path: Path) -> tuple[RBN, dict]:
    """The trained network of a checkpoint file or a run folder, and the checkpoint itself."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise RawbitError(f"{path}: no such checkpoint")
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if "rbn_config" in ckpt:
        model = build(ckpt["rbn_config"])
    else:  # checkpoints before the resolved configuration was stored
        model = create_model(cfg["model"], lambdas=tuple(cfg["lambdas"]))
    resize_cdf_buffers(model, ckpt["model"])
    model.load_state_dict(ckpt["model"])
    return model, ckpt
