"""Training configuration: presets (rawbit/train/presets/*.json), typed overrides, the lr schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RawbitError

PRESET_DIR = Path(__file__).with_name("presets")
# Keys a preset may leave out: teachers, data, starting weights (--init), per-rate sampling weights
# (uniform when absent) and the 1-based rate points validated (lowest, middle, highest when absent).
# (name -> an example of its type).
# max_cpu_min: stop once the process has used this many CPU-minutes (0: no budget); kd_attention:
# "signed" (eq. 1, the default) or "abs" (the paper's |.| ablation); freeze: parts of the network
# left as they are (e.g. ["comp"]: CS+JT).
_OPTIONAL_KEYS = {"teacher_comp": "", "teacher_isp": "", "data": [], "init": "", "lambda_weights": [],
                  "val_qualities": [], "max_cpu_min": 0.0, "kd_attention": "signed",
                  "freeze": []}


def _check_type(key: str, value, example) -> None:
    """An override has the type of the preset's value: a number where it holds a number (an int
    where an int: steps=5.5 is a mistake), a list where a list, text where text."""
    if isinstance(example, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(example, bool)
    elif isinstance(example, float):
        ok = isinstance(value, (int, float))
    elif isinstance(example, int):
        ok = isinstance(value, int)
    else:
        ok = isinstance(value, type(example))
    if not ok:
        kind = {int: "a whole number", float: "a number", list: "a list", str: "text", bool: "true or false"}
        raise RawbitError(f"setting {key}={value!r}: {key} is {kind.get(type(example), type(example).__name__)}, "
                          f"like the preset's {example!r}")


# --- config ------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_config(preset: str, overrides: dict | None = None) -> dict:
    """A preset file (name or path) with typed overrides applied; keys must exist in the preset."""
    path = Path(preset) if preset.endswith(".json") else PRESET_DIR / f"{preset}.json"
    if not path.is_file():
        raise RawbitError(f"unknown training preset {preset!r} (known: {', '.join(list_presets())})")
    cfg = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    for key, value in (overrides or {}).items():
        if key not in cfg and key not in _OPTIONAL_KEYS:
            raise RawbitError(f"unknown config key {key!r} (known: {', '.join(sorted(cfg))})")
        _check_type(key, value, cfg[key] if key in cfg else _OPTIONAL_KEYS[key])
        cfg[key] = value
    if "lambdas" in (overrides or {}):
        # Per-rate settings belong to the preset's own lambda list, not to a replacement.
        for key in ("lambda_weights", "val_qualities"):
            if key not in overrides:
                cfg.pop(key, None)
    return cfg


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' with value parsed as JSON when it can be (numbers, lists), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise RawbitError(f"a setting is key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, constant, then the paper's single step down to lr_final."""
    if cfg["warmup"] and step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    return cfg["lr"] if step < cfg["lr_decay_at"] * cfg["steps"] else cfg["lr_final"]


def rate_weights(cfg: dict) -> np.ndarray | None:
    """Probabilities of drawing each rate point for a sample (None: uniform); checks the per-rate keys."""
    n = len(cfg["lambdas"])
    bad = [q for q in cfg.get("val_qualities") or () if not 1 <= q <= n]
    if bad:
        raise RawbitError(f"val_qualities {bad} lie outside the {n} rate points")
    w = cfg.get("lambda_weights")
    if not w:
        return None
    if len(w) != n or min(w) < 0 or sum(w) <= 0:
        raise RawbitError(f"lambda_weights needs {n} non-negative numbers, one per lambda")
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()
