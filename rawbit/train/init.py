"""Starting a run from trained weights (`--init`): fine-tune a shipped model or an earlier run.

Everything but the per-rate latent gains is copied as it is. Gains are matched by lambda, so a run
may keep, drop or add rate points: a new lambda starts from the gains of its neighbours, extended
linearly in log-lambda (the gains of a trained model lie close to such a line, see RBN's init).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import RawbitError
from ..nets import RBN, load_model
from .checkpoints import model_from_checkpoint

_GAINS = ("log_gain", "log_inv_gain")


def load_source(source: str | Path) -> RBN:
    """A trained RBN from a model name, a .safetensors file, a run folder or its checkpoint.pt."""
    p = Path(source)
    if p.is_dir() or p.suffix == ".pt":
        return model_from_checkpoint(p)[0]
    return load_model(source).model


def init_from(model: RBN, source: str | Path) -> None:
    """Load `source`'s weights into `model` (same architecture), mapping rate gains by lambda."""
    src = load_source(source)
    a, b = replace(src.config, lambdas=()).to_dict(), replace(model.config, lambdas=()).to_dict()
    if a != b:
        diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
        raise RawbitError(f"--init {source}: a different network from this run's ({diff})")
    state = {k: v for k, v in src.state_dict().items() if k.split(".")[0] not in _GAINS}
    # The entropy models' CDF tables are rebuilt at export; a trained source has them sized already.
    state = {k: v for k, v in state.items() if not _is_cdf_table(k)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not (k in _GAINS or _is_cdf_table(k)) for k in missing):
        raise RawbitError(f"--init {source}: weights do not fit this network ({missing + unexpected})")
    with torch.no_grad():
        for name in _GAINS:
            getattr(model, name).copy_(
                map_gains(getattr(src, name).detach(), src.config.lambdas, model.config.lambdas)
            )


def map_gains(table: torch.Tensor, src_lambdas, dst_lambdas) -> torch.Tensor:
    """Rows of a (rates, M) log-gain table for new lambdas: copied where the lambda exists,
    else the line through the two source lambdas nearest in log-lambda."""
    logs = [math.log(l) for l in src_lambdas]
    rows = []
    for lam in dst_lambdas:
        t = math.log(lam)
        near = sorted(range(len(logs)), key=lambda i: abs(logs[i] - t))
        if abs(logs[near[0]] - t) < 1e-9 or len(logs) == 1:
            rows.append(table[near[0]])
            continue
        a, b = sorted(near[:2])
        w = (t - logs[a]) / (logs[b] - logs[a])
        rows.append(table[a] + w * (table[b] - table[a]))
    return torch.stack(rows)


def _is_cdf_table(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
