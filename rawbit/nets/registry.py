"""The one registry: architecture presets by name, shipped weights by name, weights by model id."""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from . import weights
from .architectures import build, config_from_dict
from .rbn import RBN

_PRESETS: dict[str, dict] = json.loads((Path(__file__).with_name("presets.json")).read_text())

# What `rawbit encode` uses without --model (a file models/<name>.safetensors).
DEFAULT_MODEL = "rbn-lite"


def models_dir() -> Path:
    """Where shipped weights live: $RAWBIT_MODELS; else rawbit/models/ inside an installed package
    (the wheel ships the repository's models/ there); else models/ beside rawbit/ in a checkout."""
    env = os.environ.get("RAWBIT_MODELS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "models"


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def preset_config(name: str, **overrides):
    """The config a preset names, with overrides (e.g. lambdas=(0.013,)). A cascade's parts may be
    named by their own presets."""
    if name not in _PRESETS:
        raise ModelError(f"unknown architecture preset {name!r}{_suggest(name, _PRESETS)}")
    d = dict(_PRESETS[name], **overrides)
    for part in ("isp", "comp"):
        if isinstance(d.get(part), str):
            d[part] = dict(_PRESETS[d[part]])
    return config_from_dict(d)


def create_model(name: str, **overrides) -> RBN:
    """A freshly initialised network for a preset name."""
    return build(preset_config(name, **overrides))


def list_models() -> dict[str, Path]:
    """Shipped weights by name."""
    d = models_dir()
    return {p.stem: p for p in sorted(d.glob("*.safetensors"))} if d.is_dir() else {}


@dataclass(frozen=True)
class LoadedModel:
    model: RBN
    model_id: str
    name: str
    path: Path


def resolve(name_or_path: str | Path | None) -> Path:
    """A model name (shipped), 'default', or a path to a .safetensors file -> the file's path."""
    if name_or_path is None or str(name_or_path) == "default":
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or os.sep in str(name_or_path):
        if not p.is_file():
            raise ModelError(f"{p}: no such model file")
        return p
    shipped = list_models()
    if str(name_or_path) not in shipped:
        hint = _suggest(str(name_or_path), shipped)
        if not shipped:
            hint = f" (no weights in {models_dir()}; train one with `rawbit train` or pass a file)"
        raise ModelError(f"unknown model {str(name_or_path)!r}{hint}")
    return shipped[str(name_or_path)]


def load_model(name_or_path: str | Path | None = None) -> LoadedModel:
    """Load weights by name or path (cached per file and modification time)."""
    path = resolve(name_or_path).resolve()
    return _load_cached(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> LoadedModel:
    model, model_id = weights.load(path)
    return LoadedModel(model, model_id, path.stem, path)


def find_model(model_id: str, hint: str | Path | None = None) -> LoadedModel:
    """The weights whose content hash is `model_id`: the hinted model first, then every shipped one."""
    candidates: list[Path] = []
    if hint is not None:
        candidates.append(resolve(hint))
    candidates += [p for p in list_models().values() if p not in candidates]
    for p in candidates:
        try:
            if weights.read_metadata(p).get("model_id") == model_id:
                return load_model(p)
        except ModelError:
            continue
    raise ModelError(
        f"this file was made with model {model_id[:12]}…, which is not installed "
        "(decode it with that model's weights file)"
    )


def _suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(names))}"
