"""`rawbit bench`: the Click command; the work happens in run.py, report.py and check.py."""

from __future__ import annotations

from pathlib import Path

import click

from .. import DEFAULT_EFFORT, EFFORTS
from ..cli import Command
from ..errors import RawbitError

EXAMPLES = """
\b
Examples:
  rawbit bench photos/ --out bench-out
  rawbit bench a.NEF b.CR2 --models default --codecs jpeg,avif --anchor avif --out out
  rawbit bench photos/ --out out --resume --jobs 2
  rawbit bench photos/ --codecs webp --anchor webp --qualities 4,6,9 --out out
  rawbit bench photos/ --codecs webp --anchor webp --effort normal,best --out out
  rawbit bench photos/ --models default --codecs "" --out ci \\
      --check baseline/bench.json --tolerance-bpp 1% --tolerance-psnr 0.05
"""


class _BppTolerance(click.ParamType):
    """'2%' (relative to the baseline's bpp) or '0.01' (absolute bpp)."""

    name = "TOL"

    def convert(self, value, param, ctx):  # noqa: D102 - Click's API
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            if text.endswith("%"):
                return float(text[:-1]) / 100, True
            return float(text), False
        except ValueError:
            self.fail(f"{value!r} is neither a number nor a percentage", param, ctx)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip() and x.strip().lower() != "none"]


@click.command("bench", cls=Command, epilog=EXAMPLES)
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the JSON, CSV, markdown, plot and the point cache.")
@click.option("--models", default="default", show_default=True,
              help="Comma-separated rawbit models ('' or none: only standard codecs).")
@click.option("--codecs", default="jpeg,webp,avif,jxl", show_default=True,
              help="Comma-separated codecs: jpeg, webp, avif, jxl (LibRaw's rendering saved by Pillow), "
                   "dng-jxl (the sensor planes in JPEG XL, as lossy DNG 1.7 holds them, rendered by "
                   "LibRaw); '' for none.")
@click.option("--anchor", default="jpeg", show_default=True,
              help="Codec (or model) that BD-rate and BD-PSNR are measured against.")
@click.option("--learned-only", is_flag=True,
              help="The models' own rate points only, without the detail and archive layers "
                   "(what the network alone gives; the paper's comparison).")
@click.option("--qualities", "qualities", default="", metavar="LIST",
              help="Comma-separated qualities of the models to bench, e.g. 1,6,9 (default: all they "
                   "offer); --check then compares these points alone.")
@click.option("--effort", "efforts", default=DEFAULT_EFFORT, show_default=True, metavar="LIST",
              help=f"Comma-separated encoder efforts ({', '.join(EFFORTS)}) to bench the models at; "
                   "each but the default is its own curve, e.g. rawbit-default-best.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="Torch device for the models.")
@click.option("--resume", is_flag=True, help="Reuse points already measured in OUT/cache.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Photos benched in parallel (use 1 for timings you will report).")
@click.option("--keep-files", is_flag=True, help="Write every compressed file under OUT/streams.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option("--check", "baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="bench.json (or a codec's JSON) to compare with; exit 1 on a regression.")
@click.option("--tolerance-bpp", type=_BppTolerance(), default="1%", show_default=True,
              help="Allowed bpp rise per rate point: '1%' of the baseline, or absolute bpp.")
@click.option("--tolerance-psnr", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Allowed PSNR fall per rate point, dB.")
def bench(data, out, models, codecs, anchor, learned_only, qualities, efforts, device, resume, jobs, keep_files, progress,
          baseline, tolerance_bpp, tolerance_psnr) -> None:
    """Rate-distortion and speed of rawbit models against JPEG, WebP, AVIF and JPEG XL.

    DATA are RAW files or folders of them. Each model encodes the RAW to a real .rbit and decodes
    it; each standard codec compresses the reference rendering over a quality sweep. bpp counts
    whole files; PSNR and MS-SSIM compare with the reference rendering. Unreadable RAW files are
    reported on stderr and skipped.
    """
    from . import check as check_mod
    from . import report
    from .codecs import make_codecs
    from .run import run_bench

    try:
        only = tuple(sorted({int(q) for q in _split(qualities)}))
    except ValueError:
        raise click.BadParameter(f"{qualities!r} is not a list of numbers such as 1,6,9", param_hint="--qualities")
    wrong = [e for e in _split(efforts) if e not in EFFORTS]
    if wrong or not _split(efforts):
        raise click.BadParameter(f"{efforts!r}: give efforts from {', '.join(EFFORTS)}", param_hint="--effort")
    codec_list = make_codecs(_split(codecs), _split(models), device=device, learned_only=learned_only, qualities=only,
                             efforts=tuple(dict.fromkeys(_split(efforts))))  # fmt: skip
    names = [c.name for c in codec_list]
    if not codec_list:
        raise click.UsageError("nothing to bench: give --models and/or --codecs")
    anchor_name = anchor if anchor in names else f"rawbit-{anchor}"
    if anchor_name not in names:
        raise click.BadParameter(f"{anchor!r} is not benched (choose from {', '.join(names)})",
                                 param_hint="--anchor")
    # Read the baseline first: it may be OUT/bench.json itself, which this run overwrites.
    base = check_mod.load_baseline(baseline) if baseline is not None else None
    result = run_bench(data, codec_list, out, resume=resume, jobs=jobs, keep_files=keep_files,
                       progress=progress)
    if not result.points:
        raise RawbitError(f"nothing benched: {len(result.skipped)} file(s)/point(s) skipped")
    results = report.write_all(result, codec_list, anchor_name, out)
    click.echo(report.markdown(results, report.bd_table(results, anchor_name), anchor_name,
                               len({p.image_sha256 for p in result.points})).split("\n## ")[0].rstrip())
    click.echo(f"{len(result.points)} points ({result.reused} reused), {len(result.skipped)} skipped;"
               f" results in {out}/", err=True)
    if base is not None:
        base_results, base_images = base
        failures, passes = check_mod.check(
            results, base_results,
            check_mod.Tolerance(bpp=tolerance_bpp[0], bpp_relative=tolerance_bpp[1], psnr=tolerance_psnr),
            result.benched_images(), base_images, qualities=set(only) or None)
        for line in failures:
            click.echo(f"regression: {line}", err=True)
        if failures:
            raise RawbitError(f"--check failed: {len(failures)} problem(s) against {baseline}")
        click.echo(f"check passed: {len(passes)} rate point(s) within tolerance of {baseline}", err=True)
