"""The training engine, top to bottom: config -> data -> model -> optimisers -> eval -> lr -> loop."""

from __future__ import annotations

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

from ..data.dataset import batch, load_split
from ..device import pick_device
from ..errors import RawbitError
from ..files import write_atomic
from ..nets import create_model
from ..nets.weights import export
from .checkpoints import CHECKPOINT, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import lr_at, rate_weights
from .distill import kd_loss, load_teachers
from .evaluate import evaluate, forward_batch, packed_multiple
from .init import fit_isp_head, init_from
from .log import TrainLog
from ..metrics import psnr_from_mse as psnr
from .losses import rd_loss


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
        raise RawbitError(f"{out} already holds a run: resume it, or train into another folder")
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
    else:
        ckpt = None
    if rank == 0:
        write_atomic(out / "config.json", json.dumps(cfg, indent=2).encode(), force=True)

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
    multiple = packed_multiple(model)
    if cfg["patch"] % multiple:
        raise RawbitError(f"patch must be a multiple of {multiple} RAW pixels for {cfg['model']}, not {cfg['patch']}")
    teachers = load_teachers(cfg, dev)
    if ckpt is None and cfg.get("init"):
        new_head = init_from(model, cfg["init"])
        if new_head and model.config.output == "isp":
            fit_isp_head(model, train_set, np.random.default_rng(cfg["seed"]))
    for part in cfg.get("freeze") or ():  # e.g. CS+JT: the ISP-Net learns through a frozen codec
        try:
            model.get_submodule(part).requires_grad_(False)
        except AttributeError:
            raise RawbitError(f"freeze: {cfg['model']} has no part {part!r}") from None
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    aux_params = [p for n, p in trained if n.endswith(".quantiles")]
    main_params = [p for n, p in trained if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg["lr"])
    # An ISP-Net, or a frozen codec, has no entropy bottleneck to train.
    aux_opt = torch.optim.Adam(aux_params, lr=cfg["aux_lr"]) if aux_params else None
    q_weights = rate_weights(cfg)
    step, elapsed, cpu = 0, 0.0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        if aux_opt is not None:
            aux_opt.load_state_dict(ckpt["aux_opt"])
        step, elapsed, cpu = ckpt["step"], ckpt["elapsed"], ckpt.get("cpu", 0.0)
        torch.set_rng_state(ckpt["torch_rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    lambdas = torch.tensor(cfg["lambdas"], device=dev)

    log = TrainLog(out / "log.csv", enabled=rank == 0)
    from tqdm import tqdm

    bar = tqdm(total=cfg["steps"], initial=step, file=sys.stderr, disable=not progress or rank != 0,
               desc=out.name, dynamic_ncols=True)  # fmt: skip
    t0 = time.time() - elapsed
    # CPU seconds of this process (all its threads): what an ablation "at matched CPU time" compares,
    # fair even when other work shares the cores and stretches the wall clock.
    c0 = time.process_time() - cpu
    previous_sigterm = _sigterm_interrupts()
    cpu_budget = 60.0 * cfg.get("max_cpu_min", 0)
    if cpu_budget and world > 1:
        raise RawbitError("max_cpu_min stops a single-process run; under torchrun each process would stop at its own time")
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

            out_s, target = forward_batch(net, b, q, record=bool(teachers))
            n_pix = b["srgb"].shape[-1] * b["srgb"].shape[-2]
            terms = rd_loss(out_s.x_hat, target, out_s.likelihoods, lambdas[q], n_pix)
            loss, kd = terms.loss, torch.zeros((), device=dev)
            if teachers:
                kd_terms = kd_loss(teachers, out_s, b, q, step, cfg, len(train_set))
                loss, kd = loss + kd_terms.loss, kd_terms.loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(main_params, cfg["clip_grad"])
            opt.step()
            aux = model.aux_loss()
            if aux_opt is not None:
                aux_opt.zero_grad(set_to_none=True)
                aux.backward()
                aux_opt.step()
            step += 1
            # A CPU-time budget ends the run as its last step would (validation, checkpoint, export):
            # how systems are compared "at matched CPU time".
            last = step == cfg["steps"] or (cpu_budget and time.process_time() - c0 >= cpu_budget)

            p = float(psnr(terms.mse.detach().mean()))
            running.append((loss.item(), terms.bpp.mean().item(), p, aux.item(), kd.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1][0]:.3f}", bpp=f"{running[-1][1]:.3f}", psnr=f"{p:.2f}")
            # Flushed at every checkpoint too, so a resumed run logs the same averages.
            if step % 50 == 0 or step % cfg["checkpoint_every"] == 0 or last:
                m = np.mean(running, axis=0)
                log.write(step=step, elapsed_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1), lr=lr_at(step - 1, cfg),
                          loss=m[0], bpp=m[1], psnr=m[2], aux=m[3], kd=m[4],
                          **({"kd_k": kd_terms.k} if teachers else {}))  # fmt: skip
                running.clear()
            if rank == 0 and (step % cfg["val_every"] == 0 or last):
                v = evaluate(model, val_set, cfg, dev, teachers)
                log.write(step=step, elapsed_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1), **v)
                bar.write(f"step {step} ({(time.time() - t0) / 60:.1f} min): " +
                          ", ".join(f"{k}={v:.3f}" for k, v in v.items()), file=sys.stderr)  # fmt: skip
            if rank == 0 and (step % cfg["checkpoint_every"] == 0 or last):
                _save(ckpt_path, model, opt, aux_opt, step, time.time() - t0, cfg, time.process_time() - c0)
            if last:
                break
    except KeyboardInterrupt:
        if rank == 0:
            _save(ckpt_path, model, opt, aux_opt, step, time.time() - t0, cfg, time.process_time() - c0)
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





def export_checkpoint(run: Path, path: Path) -> str:
    """Export a run's latest checkpoint as shippable weights (e.g. while it is still training)."""
    model, ckpt = model_from_checkpoint(run)
    return export(model, path, extra={"steps": ckpt["step"], "wall_s": round(ckpt["elapsed"]),
                                      "config": ckpt["config"]})  # fmt: skip


def _save(path: Path, model, opt, aux_opt, step: int, elapsed: float, cfg: dict, cpu: float = 0.0) -> None:
    # The resolved network configuration, not only the preset's name: a preset edited later must
    # not rebuild a different network from this checkpoint.
    save_checkpoint(path, {
        "model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict() if aux_opt is not None else {},
        "rbn_config": model.config.to_dict(), "step": step, "elapsed": elapsed, "cpu": cpu, "torch_rng": torch.get_rng_state(), "config": cfg,
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






