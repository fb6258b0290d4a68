"""`rawbit train`: a RAW folder to RBN checkpoints and exported weights."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import Command
from ..errors import RawbitError

_HERE = Path(__file__).resolve().parent


def _names(names) -> str:
    return ", ".join(sorted(names))


# Read from the preset files themselves (json only: --help must not import torch).
TRAIN_PRESETS = _names(p.stem for p in (_HERE / "presets").glob("*.json"))
ARCHITECTURES = _names(json.loads((_HERE.parent / "nets" / "presets.json").read_text()))

EPILOG = """\b
Examples:
  rawbit synth photos/ -o synth/                  # make training DNGs from photographs
  rawbit train --preset cpu --data synth/ --data my_nefs/ --out runs/lite
  rawbit train --preset cpu --data my_nefs/ --lambda 0.013 --out runs/l0013
  rawbit train --out runs/lite --resume           # continue after Ctrl-C or a crash
  rawbit train --preset cpu-finetune --init default --data my_nefs/ --out runs/mine   # fine-tune
  rawbit train --out runs/lite --export models/mine.safetensors   # ship the latest checkpoint
  rawbit train --preset cpu --data d/ --out runs/x --set steps=500 --set lr=2e-4
  torchrun --nproc_per_node 2 -m rawbit train --preset cpu --data d/ --out runs/ddp
"""


@click.command("train", cls=Command, epilog=EPILOG)
@click.option("--preset", default="cpu", show_default=True,
              help=f"Training preset: {TRAIN_PRESETS} (rawbit/train/presets), or a .json file.")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="Folder(s) or files of RAW photos (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--lambda", "lam", type=float, default=None,
              help="Train one rate point at this lambda (default: every lambda of the preset).")
@click.option("--model", default=None, help=f"Architecture preset: {ARCHITECTURES}.")
@click.option("--teacher-comp", type=click.Path(path_type=Path), default=None,
              help="Compression teacher weights, for knowledge distillation.")
@click.option("--teacher-isp", type=click.Path(path_type=Path), default=None,
              help="ISP teacher weights, for knowledge distillation.")
@click.option("--init", "init", default=None, metavar="WEIGHTS",
              help="Start from trained weights (a model name such as default, a .safetensors file, "
                   "or a run folder) instead of a fresh network; rate points are matched by lambda.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset value.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".cache/rawbit"), show_default=True,
              help="Where packed RAW and reference renderings are cached.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--export", "export_to", type=click.Path(path_type=Path), default=None,
              help="Only export the run's latest checkpoint to this .safetensors file.")
def train(preset, data, out, lam, model, teacher_comp, teacher_isp, init, overrides, resume, cache,
          device, export_to):
    """Train RBN on a folder of RAW photos (checkpoints, CSV log, loss plot, weights)."""
    from .config import load_config, parse_override
    from .loop import export_checkpoint, train as run

    if export_to is not None:
        model_id = export_checkpoint(out, export_to)
        click.echo(f"exported {export_to} (model id {model_id})", err=True)
        return
    if not data and not resume:
        raise RawbitError("--data is required (a folder of RAW photos)")
    sets = dict(parse_override(o) for o in overrides)
    if lam is not None:
        sets["lambdas"] = [lam]
    if model:
        sets["model"] = model
    for key, path in (("teacher_comp", teacher_comp), ("teacher_isp", teacher_isp), ("init", init)):
        if path:
            sets[key] = str(path)
    if resume and (out / "config.json").is_file():
        # A resumed run keeps its own config; --set may still change e.g. steps.
        cfg = {**json.loads((out / "config.json").read_text()), **sets}
        data = data or tuple(Path(p) for p in cfg.get("data", []))
    else:
        cfg = load_config(preset, sets)
    cfg["data"] = [str(p) for p in data]
    weights = run(cfg, list(data), out, resume=resume, device=device, cache_dir=cache)
    click.echo(f"weights: {weights}", err=True)
