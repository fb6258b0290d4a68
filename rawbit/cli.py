"""The `rawbit` command: thin Click commands over rawbit.api; errors become exit codes only here.

Nothing heavy (torch, compressai) is imported until a command runs: `rawbit --help` stays instant.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import click

from . import DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORTS
from .errors import OutputExistsError, RawbitError


EPILOG_ENCODE = """\b
Examples:
  rawbit encode photo.NEF                      # writes photo.rbit beside it
  rawbit encode photo.NEF -o out/photo.rbit --quality 6
  rawbit encode photo.NEF --quality 9          # a detail setting: more fidelity, bigger file
  rawbit encode photo.NEF --quality 13         # archive setting: sensor data within a bound
  rawbit encode photo.NEF --effort best        # weigh more ways: often a smaller file, ~5x slower
  rawbit encode shoot/*.CR2 -o compressed/     # a batch into a folder (created if missing)
"""
EPILOG_DECODE = """\b
Examples:
  rawbit decode photo.rbit                     # writes photo.png beside it
  rawbit decode photo.rbit -o photo16.png --bits 16
  rawbit decode compressed/*.rbit -o png/
"""


def print_error(message: object) -> None:
    """The one `Error: …` line on stderr, written above a progress bar rather than through it."""
    from tqdm import tqdm

    tqdm.write(f"Error: {message}", file=sys.stderr)


class _Failed(click.ClickException):
    """A RawbitError on its way out: Click shows it and exits with code 1."""

    def show(self, file=None) -> None:  # noqa: ARG002 - Click's API
        print_error(self.message)


class Command(click.Command):
    """Every rawbit command. The one place where errors become exit codes: a RawbitError is one
    `Error: …` line and exit 1, Ctrl-C one line and exit 130; anything else is a bug and keeps its
    traceback. (Usage errors stay Click's: exit 2.)"""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RawbitError as e:
            raise _Failed(str(e)) from e
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(130) from None


class _Group(click.Group):
    """The `rawbit` group; train, synth and bench are imported only when asked for."""

    command_class = Command
    _lazy = {
        "train": ("rawbit.train.cli", "train"),
        "synth": ("rawbit.data.synth_cli", "synth"),
        "bench": ("rawbit.bench.cli", "bench"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy and name not in self.commands:
            module, attr = self._lazy[name]
            self.add_command(getattr(importlib.import_module(module), attr))
        return super().get_command(ctx, name)


class Report:
    """Counts a batch's outcomes and owns its exit code: a batch goes on past a bad file."""

    def __init__(self) -> None:
        self.done, self.failed = 0, 0

    def ok(self) -> None:
        self.done += 1

    def fail(self, src: Path, dst: Path, err: RawbitError) -> None:
        self.failed += 1
        message = str(err)
        if not (str(src) in message or str(dst) in message):
            message = f"{src}: {message}"  # a batch's errors name their file
        if isinstance(err, OutputExistsError):
            message += " (use --force to overwrite)"
        print_error(message)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _plan(inputs: tuple[Path, ...], output: str | None, suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs, refused as a whole before anything is written when two inputs would
    write one output, or an output would replace an input: --force replaces old outputs, never
    photos or files being read. An output folder is created once the plan holds."""
    out = Path(output) if output else None
    folder = out is not None and _is_folder(inputs, output)
    if folder and out.exists() and not out.is_dir():
        raise RawbitError(f"{out}: is a file, not a folder (several inputs need a folder)")
    if out is None:
        outputs = [p.with_suffix(suffix) for p in inputs]  # beside each input
    else:
        outputs = [out / p.with_suffix(suffix).name for p in inputs] if folder else [out]
    pairs = list(zip(inputs, outputs))
    _refuse_collisions(pairs)
    _refuse_overwriting_inputs(pairs)
    if folder:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RawbitError(f"{out}: cannot create the folder ({e.strerror or e})") from e
    return pairs


def _is_folder(inputs: tuple[Path, ...], output: str) -> bool:
    """OUT is a folder for several inputs, for an existing folder, and for a name ending in '/'
    (as typed: a Path would drop the slash)."""
    return len(inputs) > 1 or os.path.isdir(output) or output.endswith(("/", os.sep))


def _refuse_collisions(pairs: list[tuple[Path, Path]]) -> None:
    seen: dict[str, Path] = {}
    for src, dst in pairs:
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen:
            raise RawbitError(f"{seen[key]} and {src} would both be written to {dst}; "
                              "nothing was written (give them separate output folders)")  # fmt: skip
        seen[key] = src


def _refuse_overwriting_inputs(pairs: list[tuple[Path, Path]]) -> None:
    """By path, and by inode: the same file under another name (a hard link, a symlink) counts."""
    inputs: dict[object, Path] = {}
    for src, _ in pairs:
        inputs[os.path.realpath(src)] = src
        key = _stat_key(src)
        if key is not None:  # a missing or unreadable input fails on its own, in the batch
            inputs[key] = src
    for _, dst in pairs:
        src = inputs.get(os.path.realpath(dst)) or inputs.get(_stat_key(dst))
        if src is not None:
            raise RawbitError(f"{dst}: would replace the input {src}; choose another output "
                              "(--force never overwrites an input)")  # fmt: skip


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _run_batch(pairs: list[tuple[Path, Path]], work, desc: str) -> None:
    """Run work(src, dst) on every pair; a RawbitError fails that file only. Exits 1 if any failed."""
    from tqdm import tqdm

    report = Report()
    show = len(pairs) > 1  # a bar only for batches, and only on a terminal (None: tqdm checks)
    for src, dst in tqdm(pairs, desc=desc, unit="file", file=sys.stderr, disable=None if show else True,
                         leave=False):  # fmt: skip
        try:
            work(src, dst)
            report.ok()
        except RawbitError as e:
            report.fail(src, dst, e)
    if show:
        click.echo(f"{desc}: {report.done} done, {report.failed} failed", err=True)
    click.get_current_context().exit(report.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rawbit")
def main() -> None:
    """rawbit: camera RAW photos to compact .rbit files and back, through one learned network (RBN).

    \b
    Quick start:
      rawbit encode photo.NEF -o photo.rbit
      rawbit decode photo.rbit -o photo.png
      rawbit info photo.rbit
    """
    if click.get_current_context().invoked_subcommand in ("encode", "decode"):
        from .allocator import keep_freed_memory

        keep_freed_memory()  # a photo's large arrays reused, not faulted in again (rawbit/allocator.py)


@main.command(epilog=EPILOG_ENCODE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or folder.")
@click.option("-q", "--quality", default=DEFAULT_QUALITY, show_default=True, type=click.IntRange(1, 255),
              help="1 smallest file. For the shipped models: 1-6 the learned photo (4-5: or a "
                   "coarse detail layer over a lower point, when that codes the photo better); 7-12 add "
                   "a detail layer (fidelity for bits); 13-14 archive settings, the sensor data within "
                   "a bound, rendered by LibRaw (42-51 dB at 2.0-4.8 bpp on real photos).")  # fmt: skip
@click.option("--effort", type=click.Choice(EFFORTS), default=DEFAULT_EFFORT, show_default=True,
              help="How many ways of coding the photo the encoder weighs: fast tries none (the "
                   "quality's first way), best also a coarse detail layer at the default quality "
                   "(often fewer bits for more dB on photos from unfamiliar cameras, ~5x slower there). "
                   "Any effort's file decodes the same way.")  # fmt: skip
@click.option("--model", default="default", show_default=True, help="Model name or .safetensors path.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs (never an input).")
def encode(inputs, output, quality, effort, model, device, force) -> None:
    """Compress RAW photos (DNG, NEF, CR2, ARW, ...) to .rbit files."""
    from . import api
    from .files import check_readable, check_writable, write_atomic

    def work(src: Path, dst: Path) -> None:
        check_writable(dst, force)
        check_readable(src)
        write_atomic(dst, api.encode(src, model=model, quality=quality, device=device, effort=effort), force)

    _run_batch(_plan(inputs, output, ".rbit"), work, "encode")


@main.command(epilog=EPILOG_DECODE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(), help="Output PNG (one input) or folder.")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True, help="PNG bit depth.")
@click.option("--model", default=None, help="Weights to decode with, if not installed (.safetensors).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs (never an input).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Refuse images of more than N pixels before allocating anything for them "
                   "[default: 268435456 = 2^28, far above any camera; raise it for a larger photo].")  # fmt: skip
def decode(inputs, output, bits, model, device, force, max_pixels) -> None:
    """Decode .rbit files to PNG (orientation applied)."""
    from . import api
    from .files import check_writable, write_atomic

    limit = {} if max_pixels is None else {"max_pixels": max_pixels}

    def work(src: Path, dst: Path) -> None:
        check_writable(dst, force)
        # from the path: the header is read and checked first, the rest only as it announces
        png = api.decode_png(src, model=model, device=device, bits=int(bits), name=str(src), **limit)
        write_atomic(dst, png, force)

    _run_batch(_plan(inputs, output, ".png"), work, "decode")


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

    d = api.info(file, str(file))  # header first: a huge or foreign file is refused unread
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        click.echo(f"{k:15} {v}")
