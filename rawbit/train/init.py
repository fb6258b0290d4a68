"""Starting a run from trained weights (`--init`): fine-tune a shipped model or an earlier run.

Everything but the per-rate latent gains is copied as it is. Gains are matched by lambda, so a run
may keep, drop or add rate points: a new lambda starts from the gains of its neighbours, extended
linearly in log-lambda (the gains of a trained model lie close to such a line, see RBN's init).
A network that differs only in its decoder head (`output`, e.g. rbn-lite -> rbn-lite-isp) takes
every tensor of the same name and shape; the new head keeps its fresh initialisation.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import RawbitError
from ..nets import RBN, load_model
from ..nets.weights import resize_cdf_buffers
from .checkpoints import model_from_checkpoint

_GAINS = ("log_gain", "log_inv_gain")


def load_source(source: str | Path) -> RBN:
    """A trained RBN from a model name, a .safetensors file, a run folder or its checkpoint.pt."""
    p = Path(source)
    if p.is_dir() or p.suffix == ".pt":
        return model_from_checkpoint(p)[0]
    return load_model(source).model


def init_from(model: RBN, source: str | Path) -> bool:
    """Load `source`'s weights into `model` (same architecture), mapping rate gains by lambda.

    Returns whether the decoder head is new (the source decodes to another output). Networks
    other than RBN (an ISP-Net, a cascade) start from weights of exactly their own configuration."""
    src = load_source(source)
    if not isinstance(model, RBN) or not isinstance(src, RBN):
        if src.config.to_dict() != model.config.to_dict():
            raise RawbitError(f"starting weights {source}: a different network from this run's")
        state = src.state_dict()
        resize_cdf_buffers(model, state)
        model.load_state_dict(state)
        return False
    a = replace(src.config, lambdas=(), output=model.config.output).to_dict()
    b = replace(model.config, lambdas=()).to_dict()
    if a != b:
        diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
        raise RawbitError(f"starting weights {source}: a different network from this run's ({diff})")
    state = {k: v for k, v in src.state_dict().items() if k.split(".")[0] not in _GAINS}
    # The entropy models' CDF tables are rebuilt at export; a trained source has them sized already.
    state = {k: v for k, v in state.items() if not _is_cdf_table(k)}
    new_head: set[str] = set()
    if src.config.output != model.config.output:
        own = model.state_dict()
        new_head = {k for k, v in state.items() if k not in own or own[k].shape != v.shape}
        state = {k: v for k, v in state.items() if k not in new_head}
        new_head |= {k for k in own if k.startswith("g_s.") and k not in state}
    # nn.Module's own loading: compressai's would want the CDF tables left out above.
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    if unexpected or any(not (k in _GAINS or _is_cdf_table(k) or k in new_head) for k in missing):
        raise RawbitError(f"starting weights {source}: they do not fit this network ({missing + unexpected})")
    with torch.no_grad():
        for name in _GAINS:
            getattr(model, name).copy_(
                map_gains(getattr(src, name).detach(), src.config.lambdas, model.config.lambdas)
            )
    return bool(new_head)


@torch.no_grad()
def fit_isp_head(model: RBN, samples, rng, n: int = 16, patch: int = 128) -> None:
    """Start a new "isp" head where the trained features already point: the sensor planes as a
    least-squares linear read-out of the decoder's last features (at the top rate, unquantised).

    From a random head the first outputs are noise at ~9 dB, whose huge gradients would run
    through the trained encoder and entropy model; fitted, training starts near LibRaw LINEAR.
    """
    from ..data.dataset import batch

    head = model.g_s[-1]
    b = batch(samples, n, patch, rng, augment=False)
    x, wb, ccm = (torch.from_numpy(b[k]) for k in ("raw", "wb", "cam_to_srgb"))
    q = model.n_rates - 1
    y = model.analyze(x, wb, ccm) * model.gain(q)
    feats = y * model.gain(q, inverse=True)
    for layer in model.g_s[:-1]:
        feats = layer(feats)
    target = (x * wb[:, :, None, None]).clamp(0, 1).sqrt()  # the head's plane domain
    f = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).double()
    f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)
    t = target.permute(0, 2, 3, 1).reshape(-1, 4).double()
    sol = torch.linalg.lstsq(f, t).solution  # (C + 1, 4)
    head.weight.zero_()
    head.weight[:4, :, 1, 1] = sol[:-1].T.to(head.weight.dtype)
    head.bias.zero_()
    head.bias[:4] = sol[-1].to(head.bias.dtype)


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
