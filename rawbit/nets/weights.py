"""Weight files: safetensors with the config as JSON metadata, and the model id that names both.

The model id (docs/FORMAT.md, "Model identity") is a hash of the tensors *and* of the configuration
stored beside them: everything that decides the bits. Weights files of format 1 recorded a hash of
the tensors alone (the "legacy id"); they still load, under the new id, and files written under a
legacy id still decode (format-1 .rbit files only; for the shipped models only by the very model).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as safetensors_bytes
from torch import nn

from ..errors import ModelError
from .architectures import build, config_from_dict
from .isp_net import ISPNetConfig
from .rbn import RBN, RBNConfig

FORMAT = "rawbit-weights/2"  # model_id covers tensors and configuration; tensors_id recorded too
LEGACY_FORMAT = "rawbit-weights/1"  # model_id was the tensors' hash alone

# Legacy id (tensors only) of every model shipped before ids covered the configuration -> its id now.
# A format-1 .rbit file carrying one of these decodes only with that very model (same tensors *and*
# configuration), not with a copy whose configuration was edited.
SHIPPED_LEGACY_IDS = {
    "6de41b2b5f9ffbdd5813a9914d7445ff": "63ad9df591e8d10668baaffbcc02d4b9",  # rbn-lite-v5 (the default until 2026-12-03)
}

_HEX32 = re.compile(r"[0-9a-f]{32}")
# Sizes a configuration may ask for before anything is built: far above every preset, yet a
# hostile or mistyped file cannot make the loader allocate gigabytes before it is refused.
_MAX_CHANNELS = 2048


def content_hash(state: dict[str, torch.Tensor]) -> str:
    """32 hex digits identifying the weights (names, dtypes, shapes, values), not the file layout."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def canonical_config(config: dict) -> str:
    """The one text of a configuration that the model id hashes: sorted keys, no spaces, as stored."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def model_hash(tensors_id: str, config: dict) -> str:
    """32 hex digits naming tensors and configuration together: the model id written into .rbit files."""
    h = hashlib.sha256(b"rawbit-model-id/2\n")
    h.update(tensors_id.encode() + b"\n" + canonical_config(config).encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ModelIds:
    """Who a weights file says it is, from its metadata alone (load() checks the tensors)."""

    model_id: str  # tensors + configuration
    legacy_id: str  # tensors alone: what format-1 .rbit files carry
    config: dict

    def made(self, file_model_id: str, file_version: int) -> bool:
        """Whether a .rbit file of this id and format version was written by this model."""
        if file_model_id == self.model_id:
            return True
        if file_version == 1 and file_model_id == self.legacy_id:
            pinned = SHIPPED_LEGACY_IDS.get(self.legacy_id)
            return pinned is None or pinned == self.model_id
        return False


def identify(path: str | Path) -> ModelIds:
    """The ids and configuration a weights file records, checked against each other (no tensors read)."""
    meta = read_metadata(path)
    config = _config_of(meta, path)
    if meta["format"] == LEGACY_FORMAT:
        tensors_id = meta.get("model_id")
    else:
        tensors_id = meta.get("tensors_id")
    if not isinstance(tensors_id, str) or not _HEX32.fullmatch(tensors_id):
        raise ModelError(f"{path}: damaged weights file (no valid tensor hash in its metadata)")
    model_id = model_hash(tensors_id, config)
    if meta["format"] != LEGACY_FORMAT and meta.get("model_id") != model_id:
        raise ModelError(
            f"{path}: its recorded model id does not match its tensors and configuration "
            "(an edited or damaged weights file)"
        )
    return ModelIds(model_id, tensors_id, config)


def _config_of(meta: dict, path) -> dict:
    try:
        config = json.loads(meta.get("config", ""))
    except (json.JSONDecodeError, TypeError, RecursionError) as e:
        raise ModelError(f"{path}: damaged weights file (its configuration is not JSON: {_short(e)})") from e
    if not isinstance(config, dict):
        raise ModelError(f"{path}: damaged weights file (its configuration is not a JSON object)")
    try:
        canonical_config(config)
    except ValueError as e:  # NaN or infinity
        raise ModelError(f"{path}: damaged weights file (its configuration is not JSON: {_short(e)})") from e
    return config


def _short(e: BaseException, limit: int = 120) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    config = json.loads(json.dumps(model.config.to_dict()))  # tuples -> lists: what a reader sees
    tensors_id = content_hash(state)
    model_id = model_hash(tensors_id, config)
    meta = {
        "format": FORMAT,
        "config": canonical_config(config),
        "tensors_id": tensors_id,
        "model_id": model_id,
        "extra": json.dumps(extra or {}),
    }
    from ..files import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, safetensors_bytes(state, metadata=meta), force=True)
    return model_id


def read_metadata(path: str | Path) -> dict:
    """The metadata block of a weights file (config, model id, extra) without loading tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a rawbit weights file ({e})") from e
    if meta.get("format") not in (FORMAT, LEGACY_FORMAT):
        fmt = str(meta.get("format"))[:40]
        if fmt.startswith("rawbit-weights/"):
            raise ModelError(f"{path}: weights of a newer rawbit ({fmt}); please upgrade")
        raise ModelError(f"{path}: not a rawbit weights file (format {fmt!r})")
    return meta


def load(path: str | Path) -> tuple[RBN, str]:
    """Rebuild the model a weights file describes; returns (model in eval mode on CPU, model id).

    Refused in one line: metadata that is not JSON, ids that do not match, tensors that do not
    match their recorded hash, and a configuration that does not rebuild exactly the stored tensors
    (every name, and every shape)."""
    ids = identify(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path}: damaged weights file ({_short(e)})") from e
    if content_hash(state) != ids.legacy_id:
        raise ModelError(f"{path}: weights do not match their recorded id (damaged file?)")
    model = _build(ids.config, path)
    resize_cdf_buffers(model, state)
    _check_rebuilds(model, state, path)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"{path}: its configuration does not rebuild its tensors ({_short(e)})") from e
    return model.eval(), ids.model_id


def _build(config: dict, path) -> RBN:
    try:
        cfg = config_from_dict(config)
        sizes_ok = _sizes_in_range(cfg)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: its configuration does not describe an RBN ({_short(e)})") from e
    if not sizes_ok:
        raise ModelError(f"{path}: its configuration does not describe an RBN (sizes out of range)")
    try:
        return build(cfg)
    except Exception as e:  # noqa: BLE001 - any way a configuration fails to build is one line
        raise ModelError(f"{path}: its configuration does not build a network ({_short(e)})") from e


def _sizes_in_range(cfg) -> bool:
    """Channel counts and rate points a file may ask for: a damaged one must not allocate terabytes."""
    if cfg.arch == "cascade":
        return _sizes_in_range(ISPNetConfig.from_dict(cfg.isp)) and _sizes_in_range(RBNConfig.from_dict(cfg.comp))
    if isinstance(cfg, ISPNetConfig):
        sizes = list(cfg.channels)
    else:
        sizes = [cfg.enc_channels, cfg.latent_channels, cfg.hyper_channels, *cfg.dec_channels]
    return all(isinstance(v, int) and 0 < v <= _MAX_CHANNELS for v in sizes) and 0 < len(cfg.lambdas) <= 255


def _check_rebuilds(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = [
        f"{len(v)} {what}, e.g. {v[0]}"
        for what, v in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if v
    ]
    if problems:
        raise ModelError(f"{path}: its configuration does not rebuild its tensors ({'; '.join(problems)})")


def resize_cdf_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    # compressai's CDF buffers are created empty and sized by update(); size them to the stored ones.
    for name, buf in list(model.named_buffers()):
        if name in state and buf.shape != state[name].shape:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            module.register_buffer(attr, torch.zeros_like(state[name]), persistent=True)
