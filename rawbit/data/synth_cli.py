"""`rawbit synth`: unprocess a folder of sRGB photos into synthetic Bayer DNGs for training."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Command


@click.command("synth", cls=Command)
@click.argument("src_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the DNGs (created if missing).",
)
@click.option(
    "--seed", default=0, show_default=True,
    help="Run seed; each file's seed derives from it and the file name.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None,
    help="Only the first N photos (sorted by name).",
)
@click.option("--force", is_flag=True, help="Rewrite DNGs that already exist (default: skip them).")
def synth(src_dir: Path, out_dir: Path, seed: int, limit: int | None, force: bool) -> None:
    """Unprocess the sRGB photos in SRC_DIR into Bayer DNGs (Brooks et al. 2019).

    Each DNG renders back (LibRaw, camera white balance) close to its photo; camera matrix,
    white balance, black/white level and sensor noise are drawn per file, reproducibly.

    \b
    Example:
      rawbit synth data/srgb/train -o data/synth --seed 0 --limit 100
    """
    from .synth import synthesize_folder

    outputs = synthesize_folder(src_dir, out_dir, seed=seed, limit=limit, force=force)
    click.echo(f"{len(outputs)} DNGs in {out_dir}")
