"""Encode/decode wall time and peak memory for a 12 MP RAW photo, per model (issue: speed targets).

    python benchmarks/speed.py                       # lite (shipped default) and paper
    python benchmarks/speed.py --models default --threads 2 --json out.json
    python benchmarks/speed.py --models rbn-lite --device cuda --threads 16   # on a GPU machine
    python benchmarks/speed.py --models rbn-lite --quality 13   # an archive setting
    python benchmarks/speed.py --models rbn-lite --effort best  # the encoder's slowest effort
    python benchmarks/speed.py --models default --allocator default  # as a library user's process

Each measurement runs in a fresh process so one model's memory never hides another's; the model
is loaded and warmed up (one encode) before timing starts. Peak memory is reported twice: the
resident-set growth during the call (rawbit.bench.measure) and the whole process's peak RSS
(torch runtime and weights included). A model
name without shipped weights is benchmarked with freshly initialised weights of its preset: the
network costs the same, and entropy coding time grows with the bits, so such numbers are a lower
bound for the coding part.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rawbit import DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORTS

TARGETS = {"encode_s": 15.0, "decode_s": 15.0, "peak_gib": 6.0}  # for rbn-lite on 2 CPU cores


def make_photo(path: Path, height: int = 3000, width: int = 4000) -> Path:
    """A 12 MP synthetic DNG made from scikit-image's astronaut, upscaled (project's own writer)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from rawbit.data.synth import synthesize_dng

    img = Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC)
    synthesize_dng(np.asarray(img), path, seed=0)
    return path


def _child(model: str, op: str, photo: str, threads: int, device: str, quality: int, effort: str,
           allocator: str) -> None:
    import torch

    torch.set_num_threads(threads)
    from rawbit import api
    from rawbit.allocator import keep_freed_memory

    if allocator == "command":
        keep_freed_memory()  # what `rawbit encode` and `rawbit decode` do in their own process
    from rawbit.bench.measure import measure
    from rawbit.nets.registry import list_models

    weights = model
    if model != "default" and model not in list_models():  # a preset without weights
        from rawbit.nets import create_model
        from rawbit.nets.weights import export

        torch.manual_seed(0)
        weights = str(Path(tempfile.mkdtemp()) / f"{model}.safetensors")
        export(create_model(model), weights)
    data = api.encode(photo, model=weights, device=device, quality=quality, effort=effort)  # warm-up + the bits to decode
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if op == "encode":
        data, m = measure(lambda: api.encode(photo, model=weights, device=device, quality=quality, effort=effort))
    else:
        _, m = measure(lambda: api.decode(data, model=weights, device=device))
    import resource

    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process
    gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0
    print(json.dumps({"seconds": m.seconds, "peak_gib": m.peak_mib / 1024, "bytes": len(data),
                      "process_peak_gib": total, "gpu_peak_gib": gpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rbn-lite,rbn-paper")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda)")
    ap.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="rate point or archive setting")
    ap.add_argument("--effort", choices=EFFORTS, default=DEFAULT_EFFORT, help="the encoder's effort")
    ap.add_argument("--allocator", choices=("command", "default"), default="command",
                    help="command: the C allocator as the rawbit command sets it (rawbit/allocator.py); "
                         "default: as a library user's process has it")  # fmt: skip
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child, args.threads, args.device, args.quality, args.effort, args.allocator)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = make_photo(Path(tmp) / "12mp.dng")
        for model in args.models.split(","):
            row = {"model": model, "device": args.device, "quality": args.quality, "effort": args.effort,
                   "allocator": args.allocator}
            for op in ("encode", "decode"):
                p = subprocess.run(
                    [sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
                     "--quality", str(args.quality), "--effort", args.effort, "--allocator", args.allocator, "--child", model, op, str(photo)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                r = json.loads(p.stdout.strip().splitlines()[-1])
                row[f"{op}_s"], row[f"{op}_peak_gib"] = round(r["seconds"], 2), round(r["peak_gib"], 2)
                row[f"{op}_process_peak_gib"] = round(r["process_peak_gib"], 2)
                if args.device.startswith("cuda"):
                    row[f"{op}_gpu_peak_gib"] = round(r["gpu_peak_gib"], 2)
                row["bpp"] = round(r["bytes"] * 8 / 12e6, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | quality | encode s | decode s | encode peak GiB (call / process) | "
          "decode peak GiB (call / process) | bpp |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['quality']} | {r['encode_s']} | {r['decode_s']} | {r['encode_peak_gib']} / "
              f"{r['encode_process_peak_gib']} | {r['decode_peak_gib']} / {r['decode_process_peak_gib']} "
              f"| {r['bpp']} |")  # fmt: skip
    if args.json:
        from rawbit.files import write_atomic

        write_atomic(args.json, json.dumps(rows, indent=2).encode(), force=True)


if __name__ == "__main__":
    main()
