"""The `rawbit` command: thin Click commands over rawbit.api; errors become exit codes only here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .api import DEFAULT_QUALITY
from .errors import RawbitError

EPILOG_ENCODE = """\b
Examples:
  rawbit encode photo.NEF                      # writes photo.rbit beside it
  rawbit encode photo.NEF -o out/photo.rbit --quality 6
  rawbit encode shoot/*.CR2 -o compressed/     # a batch into a folder
"""
EPILOG_DECODE = """\b
Examples:
  rawbit decode photo.rbit                     # writes photo.png beside it
  rawbit decode photo.rbit -o photo16.png --bits 16
  rawbit decode compressed/*.rbit -o png/
"""


class Report:
    """Counts a batch's outcomes and owns the exit code: a batch goes on past a bad file."""

    def __init__(self) -> None:
        self.done, self.failed = 0, 0

    def ok(self) -> None:
        self.done += 1

    def fail(self, err: Exception) -> None:
        from tqdm import tqdm

        self.failed += 1
        tqdm.write(f"Error: {err}", file=sys.stderr)  # above the progress bar, not through it

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _outputs(inputs: tuple[Path, ...], out: Path | None, suffix: str) -> list[Path]:
    """One output per input: beside it by default, OUT itself for one input, OUT/<name> for a folder."""
    if out is None:
        return [p.with_suffix(suffix) for p in inputs]
    if len(inputs) > 1 or out.is_dir() or str(out).endswith(("/", "\\")):
        if not out.is_dir():
            raise RawbitError(f"{out}: no such directory (several inputs need an existing folder)")
        return [out / p.with_suffix(suffix).name for p in inputs]
    return [out]


def _run_batch(inputs, outputs, work, desc: str) -> int:
    from tqdm import tqdm

    report = Report()
    show = len(inputs) > 1  # a bar only for batches, and only on a terminal (None: tqdm checks)
    for src, dst in tqdm(list(zip(inputs, outputs)), desc=desc, unit="file", file=sys.stderr,
                         disable=None if show else True, leave=False):  # fmt: skip
        try:
            work(src, dst)
            report.ok()
        except RawbitError as e:
            report.fail(e)
    if show:
        click.echo(f"{desc}: {report.done} done, {report.failed} failed", err=True)
    return report.exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rawbit")
def main() -> None:
    """rawbit: camera RAW photos to compact .rbit files and back, through one learned network (RBN).

    \b
    Quick start:
      rawbit encode photo.NEF -o photo.rbit
      rawbit decode photo.rbit -o photo.png
      rawbit info photo.rbit
    """


@main.command(epilog=EPILOG_ENCODE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (one input) or folder.")
@click.option("-q", "--quality", default=DEFAULT_QUALITY, show_default=True, type=click.IntRange(1, 255),
              help="Rate point: 1 smallest file, up to the model's best (11 for the default model).")
@click.option("--model", default="default", show_default=True, help="Model name or .safetensors path.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
def encode(inputs, output, quality, model, device, force) -> None:
    """Compress RAW photos (DNG, NEF, CR2, ARW, ...) to .rbit files."""
    from . import api
    from .files import check_writable, write_atomic

    def work(src: Path, dst: Path) -> None:
        check_writable(dst, force)
        write_atomic(dst, api.encode(src, model=model, quality=quality, device=device), force)

    sys.exit(_run_batch(inputs, _guard(_outputs, inputs, output, ".rbit"), work, "encode"))


@main.command(epilog=EPILOG_DECODE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output PNG (one input) or folder.")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True, help="PNG bit depth.")
@click.option("--model", default=None, help="Weights to decode with, if not installed (.safetensors).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
def decode(inputs, output, bits, model, device, force) -> None:
    """Decode .rbit files to PNG (orientation applied)."""
    from . import api
    from .files import check_writable, read_input, write_atomic

    def work(src: Path, dst: Path) -> None:
        check_writable(dst, force)
        png = api.decode_png(read_input(src), model=model, device=device, bits=int(bits), name=str(src))
        write_atomic(dst, png, force)

    sys.exit(_run_batch(inputs, _guard(_outputs, inputs, output, ".png"), work, "decode"))


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def info(file, as_json) -> None:
    """Show what a .rbit file holds: size, model, rate point, streams.

    \b
    Example:
      rawbit info photo.rbit --json
    """
    from . import api
    from .files import read_input

    d = _guard(lambda: api.info(read_input(file), str(file)))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        click.echo(f"{k:15} {v}")


def _guard(fn, *args):
    """Run fn; a RawbitError becomes one 'Error: ...' line and exit code 1."""
    try:
        return fn(*args)
    except RawbitError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


def _register_optional_commands() -> None:
    from .bench.cli import bench
    from .data.synth_cli import synth
    from .train.cli import train

    for cmd in (train, synth, bench):
        main.add_command(cmd)


_register_optional_commands()
