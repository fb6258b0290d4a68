"""The training engine, top to bottom: config -> data -> model -> optimisers -> eval -> lr -> loop."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..codec import pick_device
from ..data.dataset import Sample, batch, load_split
from ..errors import RawbitError
from ..nets import RBN, create_model
from ..nets.weights import export, load as load_weights
from .checkpoints import CHECKPOINT, load_checkpoint, model_from_checkpoint, save_checkpoint
from .init import fit_isp_head, init_from
from .losses import attention_transfer, kd_progress, kd_weight, psnr, rd_loss

PRESET_DIR = Path(__file__).with_name("presets")
# Keys a preset may leave out: teachers, data, starting weights (--init), per-rate sampling weights
# (uniform when absent) and the 1-based rate points validated (lowest, middle, highest when absent).
_OPTIONAL_KEYS = ("teacher_comp", "teacher_isp", "data", "init", "lambda_weights", "val_qualities")


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
        raise RawbitError(f"--set expects key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, constant, then the paper's single step down to lr_final."""
    if cfg["warmup"] and step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    return cfg["lr"] if step < cfg["lr_decay_at"] * cfg["steps"] else cfg["lr_final"]


# --- model inputs/targets by configuration -------------------------------------------------------------
def _io(model: RBN, b: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    x = b["srgb"] if model.config.input == "srgb" else b["raw"]
    target = b["raw"] if model.config.output == "raw" else b["srgb"]
    return x, target


def _forward(model, b: dict[str, Tensor], q: Tensor, record: bool = False):
    x, target = _io(model.module if hasattr(model, "module") else model, b)
    return model(x, q, b["wb"], b["cam_to_srgb"], record=record), target


@torch.no_grad()
def evaluate(model: RBN, samples: list[Sample], cfg: dict, device: torch.device) -> dict[str, float]:
    """Estimated bpp and PSNR on centre crops of the validation photos at low/mid/high rate."""
    model.eval()
    results: dict[str, float] = {}
    qs = [q - 1 for q in cfg.get("val_qualities") or ()]
    qs = qs or sorted({0, model.n_rates // 2, model.n_rates - 1})
    for q in qs:
        bpps, psnrs = [], []
        for s in samples[: cfg["val_images"]]:
            b = _center_crop(s, cfg["val_crop"] // 2, model.input_multiple, device)
            out, target = _forward(model, b, torch.tensor([q], device=device))
            n = b["srgb"].shape[-1] * b["srgb"].shape[-2]
            bits = sum(l.clamp_min(1e-9).log2().neg().sum() for l in out.likelihoods.values())
            x_hat = (out.x_hat.clamp(0, 1) * 255).round() / 255
            bpps.append(float(bits) / n)
            psnrs.append(float(psnr((x_hat - target).pow(2).mean())))
        results[f"val_bpp_q{q + 1}"] = float(np.mean(bpps)) if bpps else float("nan")
        results[f"val_psnr_q{q + 1}"] = float(np.mean(psnrs)) if psnrs else float("nan")
    model.train()
    return results


def _center_crop(s: Sample, half: int, multiple: int, device: torch.device) -> dict[str, Tensor]:
    _, h, w = s.packed.shape
    half = min(half, h, w) // multiple * multiple
    i, j = (h - half) // 2, (w - half) // 2
    srgb = s.srgb[2 * i : 2 * i + 2 * half, 2 * j : 2 * j + 2 * half].transpose(2, 0, 1)
    b = {
        "raw": torch.from_numpy(np.ascontiguousarray(s.packed[:, i : i + half, j : j + half])),
        "srgb": torch.from_numpy(srgb.astype(np.float32) / 255.0),
        "wb": torch.from_numpy(s.wb),
        "cam_to_srgb": torch.from_numpy(s.cam_to_srgb),
    }
    return {k: v.unsqueeze(0).to(device) for k, v in b.items()}


# --- the loop ----------------------------------------------------------------------------------------
def train(
    cfg: dict,
    data: list[Path],
    out: Path,
    *,
    resume: bool = False,
    device: str = "auto",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a run in `out`; returns the exported weights file."""
    rank, world = _init_distributed()
    dev = pick_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise RawbitError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
    else:
        ckpt = None
    if rank == 0:
        (out / "config.json").write_text(json.dumps(cfg, indent=2))

    # data
    train_set = load_split(data, "train", cache_dir, progress and rank == 0)
    val_set = load_split(data, "val", cache_dir, progress and rank == 0)
    if not train_set:
        raise RawbitError("no readable RAW files in the training split of " + ", ".join(map(str, data)))
    if not val_set:
        val_set = train_set[:2]  # tiny folders: validate on a couple of training photos rather than none
    min_side = min(min(s.packed.shape[1:]) for s in train_set)
    if min_side <= cfg["patch"]:
        raise RawbitError(f"photos must be larger than the {cfg['patch']}px RAW patch (smallest: {min_side})")

    # model and optimisers (seeded: two runs of one config start from the same weights)
    torch.manual_seed(cfg["seed"])
    model = create_model(cfg["model"], lambdas=tuple(cfg["lambdas"])).to(dev)
    if cfg["patch"] % model.input_multiple:
        raise RawbitError(f"patch must be a multiple of {model.input_multiple} RAW pixels for {cfg['model']}, not {cfg['patch']}")
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg["lr"])
    aux_opt = torch.optim.Adam(aux_params, lr=cfg["aux_lr"])
    teachers = _load_teachers(cfg, dev)
    if ckpt is None and cfg.get("init"):
        new_head = init_from(model, cfg["init"])
        if new_head and model.config.output == "isp":
            fit_isp_head(model, train_set, np.random.default_rng(cfg["seed"]))
    q_weights = _rate_weights(cfg)
    step, elapsed = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        aux_opt.load_state_dict(ckpt["aux_opt"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]
        torch.set_rng_state(ckpt["torch_rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    lambdas = torch.tensor(cfg["lambdas"], device=dev)

    log = _Log(out / "log.csv", enabled=rank == 0)
    from tqdm import tqdm

    bar = tqdm(total=cfg["steps"], initial=step, file=sys.stderr, disable=not progress or rank != 0,
               desc=out.name, dynamic_ncols=True)  # fmt: skip
    t0 = time.time() - elapsed
    previous_sigterm = _sigterm_interrupts()
    running: list[tuple[float, float, float, float, float]] = []
    try:
        while step < cfg["steps"]:
            # The batch is a pure function of (seed, rank, step): resume and workers stay exact.
            rng = np.random.default_rng([cfg["seed"], rank, step])
            b = batch(train_set, cfg["batch_size"], cfg["patch"], rng)
            if q_weights is None:
                q_np = rng.integers(0, len(cfg["lambdas"]), size=cfg["batch_size"])
            else:
                q_np = rng.choice(len(cfg["lambdas"]), size=cfg["batch_size"], p=q_weights)
            b = {k: torch.from_numpy(v).to(dev) for k, v in b.items()}
            q = torch.from_numpy(q_np).to(dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)

            out_s, target = _forward(net, b, q, record=bool(teachers))
            n_pix = b["srgb"].shape[-1] * b["srgb"].shape[-2]
            terms = rd_loss(out_s.x_hat, target, out_s.likelihoods, lambdas[q], n_pix)
            loss, kd = terms.loss, torch.zeros((), device=dev)
            if teachers:
                kd = _kd_loss(teachers, out_s, b, q, step, cfg, len(train_set))
                loss = loss + kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(main_params, cfg["clip_grad"])
            opt.step()
            aux = model.aux_loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
            step += 1

            p = float(psnr(terms.mse.detach().mean()))
            running.append((loss.item(), terms.bpp.mean().item(), p, aux.item(), kd.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1][0]:.3f}", bpp=f"{running[-1][1]:.3f}", psnr=f"{p:.2f}")
            # Flushed at every checkpoint too, so a resumed run logs the same averages.
            if step % 50 == 0 or step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]:
                m = np.mean(running, axis=0)
                log.write(step=step, elapsed_s=round(time.time() - t0, 1), lr=lr_at(step - 1, cfg),
                          loss=m[0], bpp=m[1], psnr=m[2], aux=m[3], kd=m[4])  # fmt: skip
                running.clear()
            if rank == 0 and (step % cfg["val_every"] == 0 or step == cfg["steps"]):
                v = evaluate(model, val_set, cfg, dev)
                log.write(step=step, elapsed_s=round(time.time() - t0, 1), **v)
                bar.write(f"step {step} ({(time.time() - t0) / 60:.1f} min): " +
                          ", ".join(f"{k}={v:.3f}" for k, v in v.items()), file=sys.stderr)  # fmt: skip
            if rank == 0 and (step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]):
                _save(ckpt_path, model, opt, aux_opt, step, time.time() - t0, cfg)
    except KeyboardInterrupt:
        if rank == 0:
            _save(ckpt_path, model, opt, aux_opt, step, time.time() - t0, cfg)
            bar.write(f"interrupted: checkpoint saved at step {step}; continue with --resume", file=sys.stderr)
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        bar.close()
        if world > 1:
            dist.destroy_process_group()
    weights_path = out / "model.safetensors"
    if rank == 0:
        export(model, weights_path, extra={"steps": step, "wall_s": round(time.time() - t0), "config": cfg})
        log.plot(out / "loss.png")
    return weights_path


def _rate_weights(cfg: dict) -> np.ndarray | None:
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


def export_checkpoint(run: Path, path: Path) -> str:
    """Export a run's latest checkpoint as shippable weights (e.g. while it is still training)."""
    model, ckpt = model_from_checkpoint(run)
    return export(model, path, extra={"steps": ckpt["step"], "wall_s": round(ckpt["elapsed"]),
                                      "config": ckpt["config"]})  # fmt: skip


def _save(path: Path, model, opt, aux_opt, step: int, elapsed: float, cfg: dict) -> None:
    save_checkpoint(path, {
        "model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
        "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state(), "config": cfg,
    })  # fmt: skip


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _sigterm_interrupts():
    """Background runs (nohup, torchrun, job schedulers) are stopped with SIGTERM, not Ctrl-C:
    treat it the same way, so the run saves its checkpoint before it goes. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _init_distributed() -> tuple[int, int]:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


# --- knowledge distillation --------------------------------------------------------------------------
def _load_teachers(cfg: dict, dev: torch.device) -> dict[str, RBN]:
    teachers = {}
    for key in ("teacher_comp", "teacher_isp"):
        if cfg.get(key):
            t, _ = load_weights(cfg[key])
            teachers[key] = t.to(dev).eval().requires_grad_(False)
    return teachers


def _kd_loss(teachers, out_s, b, q: Tensor, step: int, cfg: dict, n_train: int) -> Tensor:
    """Eq. 2–4: encoder maps follow the compression teacher's, decoder maps the ISP teacher's."""
    k = kd_progress(step, cfg["kd_unit"], cfg["batch_size"], n_train)
    total = out_s.x_hat.new_zeros(())
    with torch.no_grad():
        comp, isp = teachers.get("teacher_comp"), teachers.get("teacher_isp")
        t_enc = comp(b["raw"], _teacher_q(comp, q), b["wb"], b["cam_to_srgb"], record=True) if comp else None
        t_dec = isp(b["srgb"], _teacher_q(isp, q), record=True) if isp else None
    if t_enc is not None:
        total = total + kd_weight(cfg["kd_alpha_enc"], cfg["kd_gamma"], k) * attention_transfer(
            out_s.enc_features, t_enc.enc_features)
    if t_dec is not None:
        total = total + kd_weight(cfg["kd_alpha_dec"], cfg["kd_gamma"], k) * attention_transfer(
            out_s.dec_features, t_dec.dec_features)
    return total


def _teacher_q(teacher: RBN, q: Tensor) -> Tensor:
    # Paper teachers are one model per lambda; a variable-rate teacher follows the student's rate.
    return q if teacher.n_rates > 1 else torch.zeros_like(q)


# --- logging -----------------------------------------------------------------------------------------
class _Log:
    """Append-only CSV (survives resume) and a loss plot made from it."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **row) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            for k, v in row.items():
                if k != "step":
                    w.writerow([row["step"], k, f"{v:.6g}" if isinstance(v, float) else v])

    def plot(self, png: Path) -> None:
        if not self.enabled or not self.path.exists():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series: dict[str, list[tuple[int, float]]] = {}
        with open(self.path) as f:
            for row in csv.DictReader(f):
                try:
                    series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
                except ValueError:
                    continue
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for ax, keys in zip(axes, (["loss"], ["bpp"], ["psnr"])):
            for key in keys + [k for k in series if k.startswith("val_" + keys[0])]:
                if key in series:
                    xs, ys = zip(*series[key])
                    ax.plot(xs, ys, label=key)
            ax.set_xlabel("step")
            ax.set_title(keys[0])
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        plt.close(fig)
