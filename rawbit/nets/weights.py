"""Weight files: safetensors with the config as JSON metadata and a content hash as the model id."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError
from .rbn import RBN, RBNConfig

FORMAT = "rawbit-weights/1"


def content_hash(state: dict[str, torch.Tensor]) -> str:
    """32 hex digits identifying the weights (names, dtypes, shapes, values), not the file layout."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _shippable_state(model: RBN, half: bool) -> dict[str, torch.Tensor]:
    # Only learned parameters go to fp16: buffers hold constants such as GDN's 2^-36 pedestal,
    # which fp16 would flush to zero.
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if half and name in params and t.is_floating_point():
            t = t.half()
        state[name] = t.contiguous()
    return state


def export(model: RBN, path: str | Path, half: bool = True, extra: dict | None = None) -> str:
    """Freeze a trained model for shipping: fp16 weights, CDF tables built from them; returns its id.

    The tables are built *after* rounding to fp16 and stored, so every machine codes with the very
    tables the encoder used instead of rebuilding them in floating point.
    """
    model = model.cpu().eval()
    if half:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)
    state = _shippable_state(model, half)
    model_id = content_hash(state)
    meta = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "model_id": model_id,
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model_id


def read_metadata(path: str | Path) -> dict:
    """The metadata block of a weights file (config, model id, extra) without loading tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a rawbit weights file ({e})") from e
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a rawbit weights file (format {meta.get('format')!r})")
    return meta


def load(path: str | Path) -> tuple[RBN, str]:
    """Rebuild the model a weights file describes; returns (model in eval mode on CPU, model id)."""
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path}: damaged weights file ({e})") from e
    model_id = content_hash(state)
    if model_id != meta.get("model_id"):
        raise ModelError(f"{path}: weights do not match their recorded id (damaged file?)")
    config = RBNConfig.from_dict(json.loads(meta["config"]))
    model = RBN(config)
    _resize_cdf_buffers(model, state)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), model_id


def _resize_cdf_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    # compressai's CDF buffers are created empty and sized by update(); size them to the stored ones.
    for name, buf in list(model.named_buffers()):
        if name in state and buf.shape != state[name].shape:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            module.register_buffer(attr, torch.zeros_like(state[name]), persistent=True)
