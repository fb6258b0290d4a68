"""The fuzz suite's long mode (issue 11): many mutated .rbit files and damaged RAW files through the
real CLI, in a worker subprocess that a crash cannot take down with it; prints the figures.

    python benchmarks/fuzz.py                      # 10,000 .rbit cases and 1,000 RAW cases
    python benchmarks/fuzz.py --rbit 500 --raw 50 --seed 7 --json fuzz.json

The mutations are those of tests/test_fuzz.py (bit flips, truncations, re-split streams, header
fields at 0/1/max with the CRC32 recomputed, damaged streams, colour metadata, EXIF; damaged TIFF
headers and IFD entries of DNG/TIFF files), drawn from a seeded generator instead of hypothesis so a
run is reproducible by its seed. The bases are the suite's: small files written here with the tiny
model (a fresh seeded export) and, where installed, the shipped model. Every failing input is kept
under tests/fuzz_regressions/ as in the suite. A case fails on a crash (a signal), a traceback, a
hang, or anything else than one `Error: …` line on stderr with exit code 1 or a clean success.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz as fz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rbit", type=int, default=10_000, help=".rbit cases (decode and info)")
    ap.add_argument("--raw", type=int, default=1_000, help="RAW cases (encode)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--slow", type=float, default=fz.SLOW_SECONDS, help="a case slower than this is counted")
    args = ap.parse_args()

    import torch

    from rawbit.nets import create_model
    from rawbit.nets.weights import export

    work = args.out or Path(tempfile.mkdtemp(prefix="rawbit-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tiny = work / "tiny.safetensors"
    export(create_model("rbn-tiny"), tiny)
    bases = fz.make_bases(work / "bases", tiny)
    worker = fz.Worker(work / "worker.log")
    # Warm up (imports, model loads) and check that every base decodes before mutating it.
    for name, (data, model) in bases.rbit.items():
        if name == "default-v1":  # written on another machine: may be refused here, by design
            continue
        _, r = fz.run_rbit_case(worker, bases.folder, data, model, "decode")
        if r.problem("decode") or r.rc != 0:
            raise SystemExit(f"base {name} does not decode: {r.problem('decode') or r.stderr}")
    baseline_mib = r.peak_mib

    rng = random.Random(args.seed)
    stats = {"rbit": collections.Counter(), "raw": collections.Counter()}
    outcomes: collections.Counter = collections.Counter()
    failures: list[dict] = []
    slowest: list[tuple[float, float, str]] = []
    peak = 0.0
    start = time.monotonic()
    rbit_names = sorted(bases.rbit)
    for i in range(args.rbit + args.raw):
        kind = "rbit" if i < args.rbit else "raw"
        if kind == "rbit":
            base = rng.choice(rbit_names)
            ops = fz.random_rbit_ops(rng)
            data, model = bases.rbit[base]
            command = "info" if rng.random() < 0.25 else "decode"
            if base == "default-v1" and command == "decode" and rng.random() < 0.9:
                command = "info"  # the 512x512 format-1 fixture takes seconds to decode
            bad = fz.apply_ops(data, ops)
            _, r = fz.run_rbit_case(worker, bases.folder, bad, model, command)
            suffix = ".rbit"
        else:
            base = rng.choice(sorted(bases.raw))
            ops = fz.random_raw_ops(rng)
            bad = fz.apply_raw_ops(bases.raw[base], ops)
            command, suffix = "encode", (".tif" if base == "tiff" else ".dng")
            _, r = fz.run_raw_case(worker, bases.folder, bad, suffix, bases.tiny)
        s = stats[kind]
        s["cases"] += 1
        for key in ("crashes", "tracebacks", "hangs", "other failures", f"over {args.slow:g} s (wall)",
                    f"over {args.slow:g} s (CPU)"):  # fmt: skip
            s[key] += 0  # printed even when 0
        problem = r.problem(command)
        if r.signal is not None or (r.rc is None and not r.hung):
            s["crashes"] += 1
        elif r.hung:
            s["hangs"] += 1
        elif problem and problem.startswith("traceback"):
            s["tracebacks"] += 1
        elif problem:
            s["other failures"] += 1
        if r.seconds > args.slow:
            s[f"over {args.slow:g} s (wall)"] += 1
        if r.cpu_seconds > args.slow:
            s[f"over {args.slow:g} s (CPU)"] += 1
        peak = max(peak, r.peak_mib)
        slowest = sorted(slowest + [(r.seconds, r.cpu_seconds, f"{command} {base} {ops}")])[-5:]
        if problem:
            kept = fz.keep_regression(bad, command, base, problem, suffix)
            failures.append({"command": command, "base": base, "ops": repr(ops), "problem": problem[:500],
                             "kept": str(kept)})  # fmt: skip
            print(f"FAIL {command} {base} {ops}: {problem[:300]} (kept as {kept})", file=sys.stderr, flush=True)
        else:
            outcomes[_outcome(r)] += 1
        if (i + 1) % 500 == 0:
            print(f"{i + 1} cases, {time.monotonic() - start:.0f} s, {len(failures)} failures", file=sys.stderr, flush=True)
    worker.close()

    report = {
        "seed": args.seed,
        "rbit": dict(stats["rbit"]),
        "raw": dict(stats["raw"]),
        "worker_starts": worker.started,
        "peak_rss_mib": round(peak, 1),
        "rss_after_warm_up_mib": round(baseline_mib, 1),
        "wall_s": round(time.monotonic() - start, 1),
        "slowest": [{"wall_s": round(w, 2), "cpu_s": round(c, 2), "case": d} for w, c, d in reversed(slowest)],
        "outcomes": dict(outcomes.most_common(25)),
        "failures": failures,
    }
    _print(report)
    if args.json:
        from rawbit.files import write_atomic

        write_atomic(args.json, json.dumps(report, indent=2).encode(), force=True)
    return 1 if failures else 0


def _outcome(r: "fz.Result") -> str:
    """'ok', or the error's kind: the message without the file name and the numbers in it."""
    import re

    if r.rc == 0:
        return "ok"
    msg = r.error.removeprefix("Error: ")
    msg = msg.split(": ", 1)[1] if ": " in msg and msg.split(": ", 1)[0].endswith((".rbit", ".dng", ".tif")) else msg
    msg = re.sub(r"model [0-9a-f]{12,32}…?", "model ID", msg)
    return re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\(.*", "(…", msg))[:90]


def _print(report: dict) -> None:
    for kind, label in (("rbit", ".rbit (decode, info)"), ("raw", "RAW (encode)")):
        s = report[kind]
        print(f"{label:22} cases {s.get('cases', 0):6}  crashes (signals) {s.get('crashes', 0)}  "
              f"tracebacks {s.get('tracebacks', 0)}  hangs {s.get('hangs', 0)}  "
              f"other failures {s.get('other failures', 0)}  "
              + "  ".join(f"{k} {v}" for k, v in s.items() if k.startswith("over")))  # fmt: skip
    print(f"peak RSS of the worker {report['peak_rss_mib']} MiB (after warm-up {report['rss_after_warm_up_mib']} "
          f"MiB), worker starts {report['worker_starts']}, {report['wall_s']} s")  # fmt: skip
    print("slowest:", *(f"  {d['wall_s']} s wall, {d['cpu_s']} s CPU: {d['case'][:120]}" for d in report["slowest"]), sep="\n")
    print("outcomes:", *(f"  {n:6}  {k}" for k, n in report["outcomes"].items()), sep="\n")


if __name__ == "__main__":
    sys.exit(main())
