"""Orchestration of a bench: RAW files x codecs x rate points, with a resumable per-point cache."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


from ..api import reference
from ..raw import find_raw_files
from ..errors import RawbitError
from ..files import file_sha256, write_atomic
from .codecs import Codec
from .measure import measure
from ..metrics import bpp, ms_ssim, psnr

# Bump when a metric's definition changes: every cached point then becomes stale.
BENCH_VERSION = 1

# Extensions LibRaw reads that a folder is scanned for (case-insensitive); files named
# explicitly are always tried, whatever their extension.
@dataclass(frozen=True)
class Point:
    """One photo at one rate point of one codec: the row of the per-image CSV."""

    image: str
    image_sha256: str
    codec: str
    quality: int
    height: int
    width: int
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s_per_mp: float
    decode_s_per_mp: float
    encode_peak_mib: float
    decode_peak_mib: float


@dataclass
class BenchResult:
    """Every point measured or reused, and one line per thing skipped (what the exit code counts)."""

    points: list[Point] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file tried
    reused: int = 0

    def benched_images(self) -> dict[str, str]:
        """path -> sha256 of the photos that gave at least one point (what the averages hold)."""
        done = {p.image_sha256 for p in self.points}
        return {path: sha for path, sha in self.images.items() if sha in done}


def _reference_id() -> str:
    # The reference rendering is part of every point (standard codecs compress it, all compare
    # against it): a LibRaw upgrade or new render settings must not reuse old points.
    import rawpy

    from ..render import RENDER_SETTINGS

    return f"libraw {rawpy.libraw_version} {sorted(RENDER_SETTINGS.items())}"


def stream_path(out: Path, codec: str, photo: Path, sha256: str, quality: int, suffix: str) -> Path:
    """Where --keep-files writes one point's compressed file (docs/bench.md names the scheme)."""
    return out / "streams" / codec / f"{photo.stem}-{sha256[:8]}-q{quality}{suffix}"


def cache_key(image_sha256: str, codec: str, codec_id: str, quality: int, reference_id: str) -> str:
    """Hex key of one point: image content, codec and its version/weights, quality, reference, metrics."""
    key = json.dumps([BENCH_VERSION, image_sha256, codec, codec_id, quality, reference_id])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _cache_path(out: Path, key: str) -> Path:
    return out / "cache" / f"{key}.json"


def _mkdirs(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _load_cached(out: Path, key: str) -> Point | None:
    try:
        return Point(**json.loads(_cache_path(out, key).read_text()))
    except (OSError, ValueError, TypeError):  # absent, or damaged/older layout: measure again
        return None


@dataclass(frozen=True)
class _Task:
    """One photo and the points still to measure on it (codec index, quality, cache key)."""

    path: Path
    sha256: str
    todo: tuple[tuple[int, int, str], ...]


def _bench_image(task: _Task, codecs: Sequence[Codec], out: Path, keep_files: bool,
                 on_point: Callable[[], None] | None = None) -> tuple[list[Point], list[str]]:
    """Measure every point of one photo; RawbitErrors skip the photo or the point, with a line why."""
    try:
        ref = reference(task.path)  # (H, W, 3) uint8, oriented
    except RawbitError as e:
        # RawReadError messages already start with the path; don't say it twice.
        return [], [f"skipped {e}" if str(task.path) in str(e) else f"skipped {task.path}: {e}"]
    height, width = ref.shape[:2]
    mp = height * width / 1e6
    for index in sorted({i for i, _, _ in task.todo}):
        codecs[index].prepare()  # weights loaded before the clock and the memory baseline start
    points, skipped = [], []
    for index, quality, key in task.todo:
        codec = codecs[index]
        try:
            data, enc = measure(lambda: codec.encode(task.path, ref, quality))
            image, dec = measure(lambda: codec.decode(data))
            if image.shape != ref.shape:
                raise RawbitError(f"decoded {image.shape[:2]}, reference is {ref.shape[:2]}")
        except RawbitError as e:
            skipped.append(f"skipped {task.path} {codec.name} q{quality}: {e}")
        else:
            nbytes = len(data)
            if keep_files:
                # The file on disk is what bpp counts: same bytes, same size.
                stream = stream_path(out, codec.name, task.path, task.sha256, quality, codec.suffix)
                write_atomic(_mkdirs(stream), data, force=True)
                nbytes = stream.stat().st_size
            point = Point(
                image=str(task.path), image_sha256=task.sha256, codec=codec.name, quality=quality,
                height=height, width=width, bytes=nbytes, bpp=bpp(nbytes, height, width),
                psnr=psnr(ref, image), ms_ssim=ms_ssim(ref, image),
                encode_s_per_mp=enc.seconds / mp, decode_s_per_mp=dec.seconds / mp,
                encode_peak_mib=enc.peak_mib, decode_peak_mib=dec.peak_mib,
            )
            write_atomic(_mkdirs(_cache_path(out, key)), json.dumps(dataclasses.asdict(point)).encode(), force=True)
            points.append(point)
        if on_point:
            on_point()
    return points, skipped


def _init_worker(threads: int, bench: int) -> None:
    """Give each worker its share of the cores (torch and the codec libraries read these at start),
    and no life beyond the bench's."""
    # Without this each worker's torch would start one thread per core: N workers oversubscribe.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _die_with_parent(bench)


def _die_with_parent(bench: int) -> None:
    """Have the kernel stop this worker when the bench that started it (pid `bench`) dies. A bench
    stopped by SIGTERM or SIGKILL (a CI job's timeout, `kill`) runs no cleanup, and its workers went
    on coding the photo they had, for minutes, on the cores the next job needed (stop 30: two such
    workers doubled a speed benchmark's times). Linux only (prctl); elsewhere they finish their
    photo."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    # The bench's pid comes from the bench: read here, after a spawn worker's seconds of start-up,
    # the parent could already be whoever adopted the orphan, and the check below would pass.
    if os.getppid() != bench:  # the bench died before prctl could take effect
        os._exit(1)


def run_bench(
    data: Sequence[str | Path],
    codecs: Sequence[Codec],
    out: str | Path,
    *,
    resume: bool = False,
    jobs: int = 1,
    keep_files: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Bench every RAW file in `data` with every codec at every rate point; points cached in out/cache."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = find_raw_files(data)
    if not files:
        raise RawbitError("no RAW files found in " + ", ".join(map(str, data)))
    ref_id = _reference_id()
    plan = [(i, c.qualities(), c.cache_id()) for i, c in enumerate(codecs)]

    result = BenchResult()
    tasks: list[_Task] = []
    for path in files:
        sha = file_sha256(path)
        result.images[str(path)] = sha
        todo = []
        for index, qualities, codec_id in plan:
            for q in qualities:
                key = cache_key(sha, codecs[index].name, codec_id, q, ref_id)
                cached = _load_cached(out, key) if resume else None
                if cached is not None:
                    # The cached row may name the file by another path: report it under this one.
                    result.points.append(dataclasses.replace(cached, image=str(path)))
                    result.reused += 1
                else:
                    todo.append((index, q, key))
        if todo:
            tasks.append(_Task(path, sha, tuple(todo)))

    bar = tqdm(total=sum(len(t.todo) for t in tasks), file=sys.stderr, unit="point",
               disable=not progress, desc="bench")
    say = log or (lambda line: tqdm.write(line, file=sys.stderr))
    try:
        if jobs <= 1 or len(tasks) <= 1:
            for task in tasks:
                done = bar.n
                points, skipped = _bench_image(task, codecs, out, keep_files, lambda: bar.update(1))
                bar.update(len(task.todo) - (bar.n - done))  # points of a skipped photo count as done
                result.points += points
                result.skipped += skipped
                for line in skipped:
                    say(line)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            # spawn, not fork: forking a process that has started torch's thread pools can deadlock.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads, os.getpid())
            ) as pool:
                futures = {pool.submit(_bench_image, t, codecs, out, keep_files): t for t in tasks}
                for future in concurrent.futures.as_completed(futures):
                    points, skipped = future.result()
                    result.points += points
                    result.skipped += skipped
                    for line in skipped:
                        say(line)
                    bar.update(len(futures[future].todo))
    finally:
        bar.close()
    # A stable order whatever the pool's completion order: reports and CSV diff cleanly.
    order = {str(p): i for i, p in enumerate(files)}
    names = {c.name: i for i, c in enumerate(codecs)}
    result.points.sort(key=lambda p: (names.get(p.codec, 0), p.quality, order.get(p.image, 0)))
    return result
