"""Fuzzing: whatever the input, rawbit prints one `Error: …` line (or succeeds); it never crashes,
never shows a traceback, never hangs.

Inputs are mutations of files the tests write (`.rbit` files of the tiny and the shipped model,
small DNGs and TIFFs): bit flips, truncations, re-split streams, header fields at 0/1/max with the
CRC32 recomputed (anyone can write a valid CRC), damaged streams, colour metadata and EXIF; and for
`encode`, damaged RAW/DNG/TIFF headers. Each case runs through the real CLI in a worker subprocess
(`python tests/test_fuzz.py --worker`) that takes cases one after another and reports each one: a
segfault kills only the worker, which fails the test naming the case and is restarted.

Every failing input is kept under tests/fuzz_regressions/ (written there when found; commit it) and
replayed by `test_fuzz_regressions`. hypothesis drives the suite's cases (bounded to about a minute
in all: FUZZ_SECONDS); benchmarks/fuzz.py runs the long mode with a seeded generator of the same
mutations and prints the figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REGRESSIONS = HERE / "fuzz_regressions"
V1_FIXTURE = HERE / "data" / "sample-v1.rbit"
SLOW_SECONDS = 10.0  # a case slower than this is reported (the long mode counts them)
HANG_SECONDS = float(os.environ.get("FUZZ_HANG_SECONDS", "300"))  # killed, and a failure


# --- mutations: pure functions of (bytes, parameters), shared by the suite and the long mode -------

# (name, offset, size, struct format) of every header field (docs/FORMAT.md); colour fields from v2;
# in v3 the crop bytes hold pad_top/pad_left; the archive fields are v4's, at the offsets of v5's and
# v6's detail fields; correction_length is v6's, loop_length v7's (in older files, bytes of the EXIF
# or streams).
FIELDS = [
    ("version", 4, 1, "B"), ("quality", 21, 1, "B"), ("context", 22, 1, "B"),
    ("height", 23, 4, ">I"), ("width", 27, 4, ">I"), ("crop_top", 31, 1, "B"),
    ("crop_left", 32, 1, "B"), ("orientation", 33, 1, "B"), ("latent_height", 34, 2, ">H"),
    ("latent_width", 36, 2, ">H"), ("z_length", 38, 4, ">I"), ("y_anchor_length", 42, 4, ">I"),
    ("y_length", 46, 4, ">I"), ("exif_length", 50, 2, ">H"), ("model_id", 5, 16, "16s"),
] + [(f"wb{i}", 52 + 4 * i, 4, ">f") for i in range(4)] + [
    (f"ccm{i}", 68 + 4 * i, 4, ">f") for i in range(9)
] + [("archive_base", 104, 1, "B"), ("archive_shift", 105, 1, "B"), ("archive_length", 106, 4, ">I"),
       ("correction_length", 110, 2, ">H"), ("loop_length", 112, 2, ">H")]  # fmt: skip
FIELD_NAMES = [f[0] for f in FIELDS]
INT_KINDS = ["0", "1", "2", "max", "max-1", "half", "random"]
FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e-45, 63.99, 64.0, 64.01, 1e30, 3.4e38, math.nan, math.inf, -math.inf]
STREAMS = ["z", "y_anchor", "y_rest", "archive", "detail", "correction", "loop"]  # a file without such a layer keeps none
STREAM_HOWS = ["flip", "zero", "ones", "random", "cut", "insert", "delete", "empty", "double", "word"]


def fix_crc(data: bytes) -> bytes:
    if len(data) < 9:
        return data
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")


def set_field(data: bytes, name: str, kind: str, seed: int = 0) -> bytes:
    """One header field at 0/1/max/... (or a float for colour), patched in place, CRC recomputed."""
    _, offset, size, fmt = FIELDS[FIELD_NAMES.index(name)]
    if len(data) < offset + size + 4:
        return data
    if fmt == ">f":
        value = struct.pack(fmt, FLOATS[seed % len(FLOATS)] if kind != "random" else random.Random(seed).uniform(-100, 100))
    elif fmt == "16s":
        value = bytes(16) if kind == "0" else (b"\xff" * 16 if kind == "max" else random.Random(seed).randbytes(16))
    else:
        top = 256**size - 1
        v = {"0": 0, "1": 1, "2": 2, "max": top, "max-1": top - 1, "half": top // 2 + 1}.get(kind)
        if v is None:
            v = random.Random(seed).randrange(top + 1)
        value = v.to_bytes(size, "big")
    return fix_crc(data[:offset] + value + data[offset + size :])


def _split(data: bytes):
    """The parsed file, or None where it no longer parses (then stream-level mutations pass)."""
    from rawbit import bitstream
    from rawbit.errors import RawbitError

    try:
        return bitstream.parse(data)
    except RawbitError:
        return None


def _rebuild(f, **streams) -> bytes:
    from rawbit import bitstream

    for version, layer in ((4, "archive"), (5, "detail")):
        if f.version == version and streams.get(layer) == b"":  # build() writes no such file; a fuzzer does
            data = bitstream.build(dataclasses.replace(f, **{**streams, layer: b"\0"}))
            return fix_crc(data[:106] + bytes(4) + data[110:-5] + bytes(4))
    loop = streams.get("loop", f.loop)
    if f.version >= 7 and loop and streams.get("detail") == b"":  # the layer a loop filter needs, gone
        data = _rebuild(f, **{**streams, "detail": b"\0"})
        cut = len(data) - 4 - len(loop) - 1  # the placeholder byte, before the loop filter
        return fix_crc(data[:106] + bytes(4) + data[110:cut] + data[cut + 1 : -4] + bytes(4))
    if f.version >= 7 and (loop or f.version == 7) and len(loop) not in bitstream.filter_sizes(f.version):
        # build() refuses; a fuzzer does not
        data = _rebuild(f, **{**streams, "loop": bytes(bitstream.CORRECTION_SIZE)})
        length = min(len(loop), 65535).to_bytes(2, "big")
        return fix_crc(data[:112] + length + data[114 : -4 - bitstream.CORRECTION_SIZE] + loop + bytes(4))
    correction = streams.get("correction", f.correction)
    if f.version >= 6 and len(correction) not in (0, *bitstream.filter_sizes(f.version)):  # build() refuses; a fuzzer does not
        g = dataclasses.replace(f, **{**streams, "correction": b""})
        data = bitstream.build(g)
        at = bitstream.HEADER_SIZES[f.version] + len(g.exif) + len(g.z) + len(g.y_anchor) + len(g.y_rest)
        length = min(len(correction), 65535).to_bytes(2, "big")
        return fix_crc(data[:110] + length + data[112:at] + correction + data[at:-4] + bytes(4))
    return bitstream.build(dataclasses.replace(f, **streams))


def resplit(data: bytes, c1: int, c2: int) -> bytes:
    """The three streams' bytes cut at other places (empty streams included), header and CRC valid."""
    f = _split(data)
    if f is None:
        return data
    payload = f.z + f.y_anchor + f.y_rest
    a, b = sorted((c1 % (len(payload) + 1), c2 % (len(payload) + 1)))
    return _rebuild(f, z=payload[:a], y_anchor=payload[a:b], y_rest=payload[b:])


def mutate_stream(data: bytes, which: str, how: str, pos: int = 0, seed: int = 0) -> bytes:
    """Damage one stream's content (lengths in the header follow, CRC valid)."""
    f = _split(data)
    if f is None or (which in ("archive", "detail", "correction", "loop") and not getattr(f, which)):
        return data
    s = bytearray(getattr(f, which))
    rng = random.Random(seed)
    p = pos % (len(s) + 1)
    if how == "flip" and s:
        s[p % len(s)] ^= 1 << (seed % 8)
    elif how == "zero":
        s = bytearray(len(s))
    elif how == "ones":
        s = bytearray(b"\xff" * len(s))
    elif how == "random":
        s = bytearray(rng.randbytes(len(s)))
    elif how == "cut":
        s = s[:p]
    elif how == "insert":
        s[p:p] = rng.randbytes(1 + seed % 8)
    elif how == "delete":
        del s[p : p + 1 + seed % 8]
    elif how == "empty":
        s = bytearray()
    elif how == "double":
        s = s + s
    elif how == "word" and len(s) >= 4:  # one 32-bit word of the rANS stream, at 0/max
        w = (p // 4) * 4 % len(s)
        s[w : w + 4] = b"\xff\xff\xff\xff" if seed % 2 else b"\0\0\0\0"
    return _rebuild(f, **{which: bytes(s)})


def swap_streams(data: bytes, order: int) -> bytes:
    f = _split(data)
    if f is None:
        return data
    import itertools

    perm = list(itertools.permutations((f.z, f.y_anchor, f.y_rest)))[order % 6]
    return _rebuild(f, z=perm[0], y_anchor=perm[1], y_rest=perm[2])


def set_exif(data: bytes, length: int, seed: int) -> bytes:
    f = _split(data)
    if f is None:
        return data
    exif = random.Random(seed).randbytes(length % 2048)
    if seed % 3 == 0:  # a TIFF-looking start
        exif = b"II*\0\x08\0\0\0" + exif
    return _rebuild(f, exif=exif)


def flip(data: bytes, pos: int, bit: int, crc: bool) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    b[pos % len(b)] ^= 1 << (bit % 8)
    return fix_crc(bytes(b)) if crc else bytes(b)


def truncate(data: bytes, pos: int) -> bytes:
    return data[: pos % (len(data) + 1)]


def append(data: bytes, n: int, byte: int) -> bytes:
    return data + bytes([byte % 256]) * (1 + n % 4096)


RBIT_OPS = {
    "resplit": resplit, "stream": mutate_stream, "swap": swap_streams, "exif": set_exif,
    "field": set_field, "flip": flip, "truncate": truncate, "append": append,
}  # fmt: skip
# Stream-level mutations need a file that still parses: they go first, bytes-level ones last.
_ORDER = {"resplit": 0, "stream": 0, "swap": 0, "exif": 0, "field": 1, "flip": 2, "truncate": 2, "append": 2}


def apply_ops(data: bytes, ops: list[tuple]) -> bytes:
    for name, *args in sorted(ops, key=lambda op: _ORDER.get(op[0], 3)):
        data = (RBIT_OPS.get(name) or RAW_OPS[name])(data, *args)
    return data


def random_rbit_ops(rng: random.Random) -> list[tuple]:
    """The long mode's generator: the same mutations as the hypothesis strategy, from a seed."""
    ops = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        name = rng.choice(list(RBIT_OPS))
        big = rng.randrange(1 << 30)
        if name == "resplit":
            ops.append((name, big, rng.randrange(1 << 30)))
        elif name == "stream":
            ops.append((name, rng.choice(STREAMS), rng.choice(STREAM_HOWS), big, rng.randrange(1 << 16)))
        elif name == "swap":
            ops.append((name, rng.randrange(6)))
        elif name == "exif":
            ops.append((name, big, rng.randrange(1 << 16)))
        elif name == "field":
            ops.append((name, rng.choice(FIELD_NAMES), rng.choice(INT_KINDS), rng.randrange(1 << 16)))
        elif name == "flip":
            ops.append((name, big, rng.randrange(8), rng.random() < 0.8))
        elif name == "truncate":
            ops.append((name, big))
        else:
            ops.append((name, big, rng.randrange(256)))
    return ops


# RAW inputs (DNG and TIFF): damage where the parsers look, the TIFF header and the IFD entries.


def _tag_offsets(data: bytes) -> list[int]:
    """File offsets of every IFD entry (12 bytes each) of a TIFF/DNG, found by tifffile."""
    import io
    import logging

    import tifffile

    log = logging.getLogger("tifffile")
    before, log.disabled = log.disabled, True  # it logs what it finds damaged: not this run's news
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return sorted({tag.offset for page in tif.pages for tag in page.tags.values()})
    except Exception:  # noqa: BLE001 - a file that no longer parses has no entries to aim at
        return []
    finally:
        log.disabled = before


def set_tag(data: bytes, index: int, part: int, kind: str, seed: int = 0) -> bytes:
    """Patch one IFD entry: its type (part 0), count (1) or value/offset (2), to 0/1/max/random."""
    offsets = _tag_offsets(data)
    if not offsets:
        return data
    at = offsets[index % len(offsets)]
    start, size = [(at + 2, 2), (at + 4, 4), (at + 8, 4)][part % 3]
    top = 256**size - 1
    v = {"0": 0, "1": 1, "2": 2, "max": top, "max-1": top - 1, "half": top // 2 + 1}.get(kind)
    if v is None:
        v = random.Random(seed).randrange(top + 1)
    little = data[:2] == b"II"
    return data[:start] + v.to_bytes(size, "little" if little else "big") + data[start + size :]


def smash(data: bytes, pos: int, length: int, byte: int, header: bool) -> bytes:
    """Overwrite a run of bytes (in the first 4 KiB where `header`) with one value or noise."""
    if not data:
        return data
    span = min(len(data), 4096) if header else len(data)
    p, n = pos % span, 1 + length % 64
    fill = bytes([byte % 256]) * n if byte < 256 else random.Random(byte).randbytes(n)
    return data[:p] + fill[: len(data) - p] + data[p + n :]


RAW_OPS = {"tag": set_tag, "smash": smash, "flip": flip, "truncate": truncate, "append": append}


def random_raw_ops(rng: random.Random) -> list[tuple]:
    ops = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(["tag", "tag", "smash", "flip", "truncate", "append"])
        big = rng.randrange(1 << 30)
        if name == "tag":
            ops.append((name, big, rng.randrange(3), rng.choice(INT_KINDS), rng.randrange(1 << 16)))
        elif name == "smash":
            ops.append((name, big, rng.randrange(64), rng.randrange(512), rng.random() < 0.8))
        elif name == "flip":
            ops.append((name, big % 4096 if rng.random() < 0.7 else big, rng.randrange(8), False))
        elif name == "truncate":
            ops.append((name, big))
        else:
            ops.append((name, big, rng.randrange(256)))
    return ops


def apply_raw_ops(data: bytes, ops: list[tuple]) -> bytes:
    for name, *args in sorted(ops, key=lambda op: {"tag": 0, "smash": 1}.get(op[0], 2)):
        data = RAW_OPS[name](data, *args)
    return data


# --- base files -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Bases:
    """Files to mutate, and how to run a case on each kind."""

    folder: Path
    tiny: Path  # tiny model weights
    rbit: dict[str, tuple[bytes, str | None]]  # name -> (bytes, --model or None for auto)
    raw: dict[str, bytes]  # name -> bytes of a DNG / TIFF
    tiny_id: str


def recode_legacy(data: bytes, model: Path | None, version: int) -> bytes:
    """The same photo as a format-1 or -2 file: its latent re-coded by compressai's float32 path, as
    the encoders of those formats coded it (so it decodes on the machine that makes it)."""
    import torch

    from rawbit import bitstream
    from rawbit.rans import guarded_rans
    from rawbit.nets.probability import float32_path_in_bands
    from rawbit.nets.rbn import LatentStreams
    from rawbit.nets.registry import load_model

    f = bitstream.parse(data)
    assert f.pad == (0, 0), "formats 1-2 cannot say that a mosaic was padded"
    net = load_model(model).model
    q = f.quality - 1
    with torch.inference_mode():
        y_hat = net.decompress_latent(LatentStreams(f.y_anchor, f.y_rest, f.z), f.latent_size, q)
        y = y_hat / net.gain(q, inverse=True) / net.gain(q)  # back to the encoder's scale
        with float32_path_in_bands(net), guarded_rans(net):
            s, _ = net.compress_latent(y, q, exact=False)
    g = dataclasses.replace(f, version=version, y_anchor=s.y_anchor, y_rest=s.y_rest, z=s.z)
    if version == 1:
        g = dataclasses.replace(g, wb=None, cam_to_srgb=None)
    return bitstream.build(g)


def make_bases(folder: Path, tiny: Path, with_default: bool = True) -> Bases:
    """Small files written here: tiny-model .rbit files (format 3, format 4 with an archive layer,
    and 2 and 1 re-coded as their encoders coded them), a default-model file where the shipped model is installed, the format-1
    fixture (which may not decode on this machine: docs/FORMAT.md), small DNGs and TIFFs."""
    import numpy as np
    import tifffile

    sys.path.insert(0, str(HERE))
    from conftest import write_linear_dng, write_test_dng

    from rawbit import api, bitstream, correction
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    folder.mkdir(parents=True, exist_ok=True)
    dng = write_test_dng(folder / "base.dng", height=64, width=96, seed=1)
    dng_odd = write_test_dng(folder / "base-grbg.dng", height=66, width=98, cfa="GRBG", orientation=6, seed=2)
    tiny_id = api.model_id(tiny)
    rbit: dict[str, tuple[bytes, str | None]] = {}
    t1 = api.encode(dng, model=tiny, quality=1, device="cpu", learned_only=True)
    rbit["tiny-v3"] = (t1, str(tiny))
    rbit["tiny-v3-q7-oriented"] = (api.encode(dng_odd, model=tiny, quality=7, device="cpu", learned_only=True), str(tiny))
    archive_quality = api.model_qualities(tiny)[-1]
    rbit["tiny-v4-archive"] = (api.encode(dng_odd, model=tiny, quality=archive_quality, device="cpu"), str(tiny))
    layered = bitstream.parse(api.encode(dng_odd, model=tiny, quality=7, device="cpu"))
    v6_detail = bitstream.build(dataclasses.replace(layered, version=6, loop=b""))
    rbit["tiny-v6-detail"] = (v6_detail, str(tiny))  # with a correction filter, and a detail layer
    loop = layered.loop or correction.pack(correction.identity())  # a filter to damage, sent or not
    rbit["tiny-v7-loop"] = (bitstream.build(dataclasses.replace(layered, version=7, loop=loop)), str(tiny))
    v6 = bitstream.parse(api.encode(dng, model=tiny, quality=1, device="cpu"))
    if not v6.correction:  # a photo this small may not pay for one: give it a filter to damage
        v6 = dataclasses.replace(v6, correction=correction.pack(correction.identity()))
    rbit["tiny-v6"] = (bitstream.build(v6), str(tiny))
    v5 = dataclasses.replace(bitstream.parse(v6_detail), version=5, correction=b"")  # as rawbit wrote it before
    rbit["tiny-v5-detail"] = (bitstream.build(v5), str(tiny))
    rbit["tiny-v2"] = (recode_legacy(t1, tiny, 2), str(tiny))
    rbit["tiny-v1"] = (recode_legacy(t1, tiny, 1), str(tiny))
    if with_default and DEFAULT_MODEL in list_models():
        rbit["default-v3"] = (api.encode(dng, quality=3, device="cpu"), None)
        if V1_FIXTURE.is_file():
            rbit["default-v1"] = (V1_FIXTURE.read_bytes(), None)
    linear = write_linear_dng(folder / "linear.dng")
    plain = folder / "plain.tif"
    tifffile.imwrite(str(plain), (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8))
    raw = {"dng": dng.read_bytes(), "dng-grbg": dng_odd.read_bytes(), "linear-dng": linear.read_bytes(),
           "tiff": plain.read_bytes()}  # fmt: skip
    return Bases(folder, Path(tiny), rbit, raw, tiny_id)


# --- the worker: runs cases through the real CLI, one after another ---------------------------------


def _worker_main() -> None:
    """Read JSON cases on stdin; run each through rawbit's CLI with fds 1 and 2 captured (C libraries
    write there too); answer one JSON line per case on the original stdout."""
    import resource
    import traceback
    import warnings

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    import rawbit.api  # noqa: F401 - torch, compressai...: imported once, here, not in a case
    from rawbit.cli import main

    saved = os.dup(1), os.dup(2)
    for line in sys.stdin:
        case = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            if hasattr(warnings, "_filters_mutated"):
                warnings._filters_mutated()  # a warning shows again each case, as in a fresh process
            start, cpu = time.monotonic(), _cpu_seconds()
            rc = 0
            try:
                main.main(args=case["argv"], prog_name="rawbit", standalone_mode=True)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - what `python -m rawbit` would print
                traceback.print_exc()
                rc = 1
            seconds, cpu = time.monotonic() - start, _cpu_seconds() - cpu
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            out.seek(0)
            err.seek(0)
            stdout, stderr = (f.read().decode("utf-8", "replace") for f in (out, err))
        for path in case.get("cleanup", []):
            Path(path).unlink(missing_ok=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        proto.write(json.dumps({"id": case["id"], "rc": rc, "stdout": stdout[-4000:], "stderr": stderr[-4000:],
                                "seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak}) + "\n")  # fmt: skip


def _cpu_seconds() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


@dataclasses.dataclass
class Result:
    case: str
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float = 0.0
    cpu_seconds: float = 0.0
    signal: int | None = None  # the worker died of this signal during the case
    hung: bool = False

    def problem(self, command: str) -> str | None:
        """What is wrong with how the case ended, or None: one `Error:` line (exit 1) or success."""
        if self.signal is not None:
            return f"crashed (signal {self.signal})"
        if self.hung:
            return f"hung (killed after {HANG_SECONDS:.0f} s)"
        if self.rc is None:
            return "crashed (the worker died)"
        if "Traceback" in self.stderr + self.stdout:
            return "traceback:\n" + self.stderr[-2000:]
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if self.rc == 1:
            if len(lines) != 1 or not lines[0].startswith("Error: "):
                return "not one `Error:` line:\n" + "\n".join(lines[:10])
            return None
        if self.rc != 0:
            return f"exit code {self.rc}:\n" + "\n".join(lines[:10])
        if lines:
            return "output on stderr after a success:\n" + "\n".join(lines[:10])
        return None

    @property
    def error(self) -> str:
        return self.stderr.strip()


class Worker:
    """One worker subprocess at a time; restarted after a crash or a hang."""

    def __init__(self, log: Path | None = None):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.started = 0

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}  # a plain `rawbit` run
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)  # fmt: skip
        self.started += 1

    def run(self, case_id: str, argv: list[str], cleanup: list[str] = ()) -> Result:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        msg = json.dumps({"id": case_id, "argv": argv, "cleanup": list(cleanup)}) + "\n"
        start = time.monotonic()
        try:
            self.proc.stdin.write(msg.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died(case_id, start)
        ready, _, _ = select.select([self.proc.stdout], [], [], HANG_SECONDS + 60)  # + start-up
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return Result(case_id, None, "", "", time.monotonic() - start, hung=True)
        line = self.proc.stdout.readline()
        if not line:
            return self._died(case_id, start)
        d = json.loads(line)
        r = Result(case_id, d["rc"], d["stdout"], d["stderr"], d["seconds"], d["peak_mib"], d["cpu_seconds"])
        if r.seconds > HANG_SECONDS:
            r.hung = True
        return r

    def _died(self, case_id: str, start: float) -> Result:
        rc = self.proc.wait()
        self.proc = None
        return Result(case_id, None, "", "", time.monotonic() - start, signal=-rc if rc < 0 else None)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def rbit_argv(command: str, case: Path, out: Path, model: str | None) -> list[str]:
    if command == "info":
        return ["info", str(case), "--json"]
    argv = ["decode", str(case), "-o", str(out), "--force", "--device", "cpu"]
    return argv + (["--model", model] if model else [])


def run_rbit_case(worker: Worker, folder: Path, data: bytes, model: str | None, command: str) -> tuple[Path, Result]:
    digest = hashlib.sha256(data).hexdigest()[:16]
    case = folder / f"case-{digest}.rbit"
    case.write_bytes(data)
    out = folder / f"out-{digest}.png"
    r = worker.run(case.name, rbit_argv(command, case, out, model), cleanup=[str(out)])
    return case, r


def run_raw_case(worker: Worker, folder: Path, data: bytes, suffix: str, tiny: Path) -> tuple[Path, Result]:
    digest = hashlib.sha256(data).hexdigest()[:16]
    case = folder / f"case-{digest}{suffix}"
    case.write_bytes(data)
    out = folder / f"out-{digest}.rbit"
    argv = ["encode", str(case), "-o", str(out), "--force", "--model", str(tiny), "--device", "cpu", "-q", "1"]
    return case, worker.run(case.name, argv, cleanup=[str(out)])


def keep_regression(data: bytes, command: str, base: str, problem: str, suffix: str = ".rbit") -> Path:
    """A failing input, kept for good: tests/fuzz_regressions/<command>-<base>-<hash><suffix>."""
    REGRESSIONS.mkdir(exist_ok=True)
    kind = problem.split()[0].strip(":(").lower()
    p = REGRESSIONS / f"{command}-{base}-{kind}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    if not p.exists():
        p.write_bytes(data)
    return p


def model_of_regression(path: Path, bases: Bases) -> str | None:
    """Regression files name the model that made them: 'default' (auto) or 'tiny' (this session's)."""
    return None if "-default" in path.name else str(bases.tiny)


def with_model_id(data: bytes, model_id: str) -> bytes:
    """The file under another model id; the CRC is recomputed only where it was valid."""
    if len(data) < 25 or data[:4] != b"RBIT":
        return data
    crc_ok = zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big")
    out = data[:5] + bytes.fromhex(model_id)[:16] + data[21:]
    return fix_crc(out) if crc_ok else out


# --- the suite --------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    # Seconds of fuzzing per test in the suite (about a minute in all); 0 skips them.
    BUDGET = float(os.environ.get("FUZZ_SECONDS", "10"))
    # The same cases every run (CI stays reproducible); FUZZ_SEED=N explores other ones.
    SEED = os.environ.get("FUZZ_SEED")
    SETTINGS = settings(max_examples=400, deadline=None, derandomize=SEED is None, database=None,
                        suppress_health_check=list(HealthCheck))  # fmt: skip

    def _seeded(test):
        from hypothesis import seed

        return seed(int(SEED))(test) if SEED is not None else test

    @pytest.fixture(scope="module")
    def bases(tmp_path_factory, tiny_weights) -> Bases:
        return make_bases(tmp_path_factory.mktemp("fuzz"), tiny_weights)

    @pytest.fixture(scope="module")
    def worker(tmp_path_factory, bases):
        w = Worker(tmp_path_factory.mktemp("fuzz-log") / "worker.log")
        for name, (data, model) in bases.rbit.items():  # the bases decode (and warm the worker up)
            if name != "default-v1":  # written on another machine: may be refused here, by design
                _, r = run_rbit_case(w, bases.folder, data, model, "decode")
                assert r.rc == 0 and r.problem("decode") is None, f"{name}: {r.problem('decode') or r.stderr}"
        yield w
        w.close()

    class Budget:
        def __init__(self, seconds: float):
            self.seconds, self.start, self.cases = seconds, None, 0

        def spent(self) -> bool:
            if self.start is None:
                self.start = time.monotonic()
            return time.monotonic() - self.start > self.seconds

    def _check(r: Result, data: bytes, command: str, base: str, ops, suffix: str = ".rbit", found=None) -> None:
        """Fail with the case's problem; the input is kept as a regression file (under hypothesis,
        `found` collects the failures and only the last, shrunk one is kept: see _keep_shrunk)."""
        problem = r.problem(command)
        if problem:
            if found is None:
                kept = keep_regression(data, command, base, problem, suffix)
                pytest.fail(f"{command} of a mutated {base} ({ops}) {problem}\n(kept as {kept})")
            found.append((data, command, base, problem, suffix))
            pytest.fail(f"{command} of a mutated {base} ({ops}) {problem}")

    def _keep_shrunk(prop) -> None:
        found: list = []
        try:
            prop(found)
        except BaseException:
            if found:
                print(f"kept as {keep_regression(*found[-1])}", file=sys.stderr)
            raise

    _i = st.integers(0, 2**30)
    rbit_op = st.one_of(
        st.tuples(st.just("resplit"), _i, _i),
        st.tuples(st.just("stream"), st.sampled_from(STREAMS), st.sampled_from(STREAM_HOWS), _i, st.integers(0, 2**16)),
        st.tuples(st.just("swap"), st.integers(0, 5)),
        st.tuples(st.just("exif"), _i, st.integers(0, 2**16)),
        st.tuples(st.just("field"), st.sampled_from(FIELD_NAMES), st.sampled_from(INT_KINDS), st.integers(0, 2**16)),
        st.tuples(st.just("flip"), _i, st.integers(0, 7), st.booleans()),
        st.tuples(st.just("truncate"), _i),
        st.tuples(st.just("append"), _i, st.integers(0, 255)),
    )  # fmt: skip
    raw_op = st.one_of(
        st.tuples(st.just("tag"), _i, st.integers(0, 2), st.sampled_from(INT_KINDS), st.integers(0, 2**16)),
        st.tuples(st.just("smash"), _i, st.integers(0, 63), st.integers(0, 511), st.booleans()),
        st.tuples(st.just("flip"), st.integers(0, 4095), st.integers(0, 7), st.just(False)),
        st.tuples(st.just("truncate"), _i),
        st.tuples(st.just("append"), _i, st.integers(0, 255)),
    )  # fmt: skip

    def test_every_rbit_header_field_at_its_extremes(bases, worker):
        """Each header field at 0, 1 and its maximum (CRC valid) on tiny-model files (format 3;
        4 with its archive layer; 5 with a detail layer; 6 with a correction filter, and with a
        detail layer too; 7 with a loop filter after it): refused or decoded."""
        budget = Budget(BUDGET)
        for base in ("tiny-v3", "tiny-v4-archive", "tiny-v5-detail", "tiny-v6", "tiny-v6-detail", "tiny-v7-loop"):
            data, model = bases.rbit[base]
            for name in FIELD_NAMES:
                for kind in ("0", "1", "max"):
                    if budget.spent():
                        break
                    bad = set_field(data, name, kind)
                    for command in ("decode", "info"):
                        budget.cases += 1
                        _, r = run_rbit_case(worker, bases.folder, bad, model, command)
                        _check(r, bad, command, base, [("field", name, kind)])
        print(f"fuzz: {budget.cases} header-field cases of {3 * len(FIELD_NAMES) * 10}")

    def test_empty_and_resplit_streams_never_crash(bases, worker):
        """The SIGSEGV cases of issue 11: empty or re-split streams behind a valid header."""
        budget = Budget(BUDGET)
        for base, (data, model) in bases.rbit.items():
            f = _split(data)
            n = len(f.z) + len(f.y_anchor) + len(f.y_rest)
            cuts = [(0, 0), (0, n), (n, n), (4, n - 4), (len(f.z), len(f.z)), (len(f.z) + len(f.y_anchor), n),
                    (len(f.z) // 2, len(f.z) + len(f.y_anchor) // 2), (len(f.z) + 3, n - 5)]  # fmt: skip
            for c1, c2 in cuts:
                if budget.spent():
                    break
                bad = resplit(data, c1, c2)
                budget.cases += 1
                _, r = run_rbit_case(worker, bases.folder, bad, model, "decode")
                _check(r, bad, "decode", base, [("resplit", c1, c2)])
        print(f"fuzz: {budget.cases} re-split cases")

    def _rbit_property(bases, worker, budget):
        @_seeded
        @SETTINGS
        @given(base=st.sampled_from(sorted(bases.rbit)), ops=st.lists(rbit_op, min_size=1, max_size=3),
               command=st.sampled_from(["decode", "decode", "info"]))  # fmt: skip
        def prop(found, base, ops, command):
            if budget.spent():
                return
            data, model = bases.rbit[base]
            if base.startswith("default-v1") and command == "decode" and budget.cases % 8:
                command = "info"  # the 512x512 format-1 fixture decodes in seconds: only now and then
            bad = apply_ops(data, ops)
            budget.cases += 1
            _, r = run_rbit_case(worker, bases.folder, bad, model, command)
            _check(r, bad, command, base, ops, found=found)

        _keep_shrunk(prop)

    def test_mutated_rbit_files_give_one_error_line_or_decode(bases, worker):
        budget = Budget(BUDGET)
        _rbit_property(bases, worker, budget)
        print(f"fuzz: {budget.cases} mutated .rbit cases in {time.monotonic() - budget.start:.1f} s")
        assert budget.cases >= 5 or BUDGET < 5

    def test_damaged_raw_files_give_one_error_line_or_encode(bases, worker):
        budget = Budget(BUDGET / 2)

        @_seeded
        @SETTINGS
        @given(base=st.sampled_from(sorted(bases.raw)), ops=st.lists(raw_op, min_size=1, max_size=3))
        def prop(found, base, ops):
            if budget.spent():
                return
            bad = apply_raw_ops(bases.raw[base], ops)
            budget.cases += 1
            suffix = ".tif" if base == "tiff" else ".dng"
            _, r = run_raw_case(worker, bases.folder, bad, suffix, bases.tiny)
            _check(r, bad, "encode", base, ops, suffix, found=found)

        _keep_shrunk(prop)
        print(f"fuzz: {budget.cases} damaged RAW cases in {time.monotonic() - budget.start:.1f} s")
        assert budget.cases >= 3 or BUDGET < 5

    REGRESSION_FILES = sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.suffix != ".md")

    @pytest.mark.parametrize("path", REGRESSION_FILES, ids=lambda p: p.name)
    def test_fuzz_regressions(path, bases, worker):
        """Every input that ever failed: one `Error:` line or a clean success, now and forever."""
        data = path.read_bytes()
        if path.name.startswith("encode-"):
            _, r = run_raw_case(worker, bases.folder, data, path.suffix, bases.tiny)
            assert r.problem("encode") is None, f"{path.name}: {r.problem('encode')}"
            return
        model = model_of_regression(path, bases)
        variants = [data] if model is None else [data, with_model_id(data, bases.tiny_id)]
        for variant in variants:  # as found, and under this session's tiny model id
            for command in ("decode", "info"):
                _, r = run_rbit_case(worker, bases.folder, variant, model, command)
                assert r.problem(command) is None, f"{path.name} ({command}): {r.problem(command)}"


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
