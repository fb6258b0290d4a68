"""Does a photo code to the same bits whatever computes it? The determinism table of issue 11.

    python benchmarks/determinism.py                                   # examples/sample.dng
    python benchmarks/determinism.py ../shared/data/raw-more/nikon_d1_01.nef --quality 6 --json det.json

Each configuration runs in a fresh process: torch threads {1, 2} x oneDNN {on, off}, plus the
probability path computed by its int64 reference kernel instead of float64. Each encodes the photo
and decodes the file the first configuration wrote. Reported per configuration: whether its .rbit
bytes equal the first's, whether the CDF indexes and means its decoder computed equal those the
first encoder computed (bit for bit), and how far its decoded pixels are from the first's (the
synthesis transform is float32: it may differ in the last bits between kernels; it decides no bits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [  # (threads, oneDNN, probability-path kernel)
    (2, True, "float64"), (1, True, "float64"), (2, False, "float64"), (1, False, "float64"), (2, True, "int64"),
]  # fmt: skip


def _child(photo: str, model: str, quality: int, threads: int, onednn: bool, kernel: str, reference: str, out: str) -> None:
    import numpy as np
    import torch

    from rawbit import api
    from rawbit.nets import probability

    torch.set_num_threads(threads)
    with torch.backends.mkldnn.flags(enabled=onednn), probability.kernel(kernel):
        with probability.tracing() as encoder_trace:
            data = api.encode(photo, model=model, quality=quality, device="cpu")
        ref = Path(reference)
        if not ref.exists():
            ref.write_bytes(data)
        with probability.tracing() as decoder_trace:
            pixels = api.decode(ref.read_bytes(), model=model, device="cpu", bits=16)

    def digest(trace) -> str:
        h = hashlib.sha256()
        for indexes, means in trace:
            h.update(indexes.numpy().tobytes() + means.numpy().tobytes())
        return h.hexdigest()

    np.save(out + ".npy", pixels)
    Path(out + ".json").write_text(json.dumps({
        "rbit_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "encoder_path": digest(encoder_trace), "decoder_path": digest(decoder_trace),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photo", nargs="?", default=str(Path(__file__).parents[1] / "examples" / "sample.dng"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        photo, model, q, threads, onednn, kernel, ref, out = args.child
        _child(photo, model, int(q), int(threads), onednn == "1", kernel, ref, out)
        return
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = str(Path(tmp) / "reference.rbit")
        first = None
        for i, (threads, onednn, kernel) in enumerate(CONFIGS):
            out = str(Path(tmp) / f"run{i}")
            cmd = [sys.executable, __file__, "--child", args.photo, args.model, str(args.quality), str(threads),
                   "1" if onednn else "0", kernel, ref, out]  # fmt: skip
            subprocess.run(cmd, check=True)
            r = json.loads(Path(out + ".json").read_text())
            px = np.load(out + ".npy").astype(np.int64)
            if first is None:
                first = dict(r, pixels=px)
            rows.append({
                "threads": threads, "onednn": onednn, "kernel": kernel, "bytes": r["bytes"],
                "same_rbit": r["rbit_sha256"] == first["rbit_sha256"],
                "same_encoder_path": r["encoder_path"] == first["encoder_path"],
                "decoder_path_is_encoders": r["decoder_path"] == first["encoder_path"],
                "max_pixel_diff_16bit": int(np.abs(px - first["pixels"]).max()),
                "pixels_differing": int((px != first["pixels"]).any(-1).sum()),
            })  # fmt: skip
    print(f"{args.photo}, model {args.model}, rate point {args.quality}, {first['pixels'].shape[1]}x{first['pixels'].shape[0]}")
    print("| encode+decode on | .rbit bytes | same .rbit | same encoder indexes+means | decoder's = first encoder's | pixel diff (16-bit max, pixels) |")
    print("|---|---:|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} thread(s), oneDNN {'on' if r['onednn'] else 'off'}, {r['kernel']} path | {r['bytes']} | "
              f"{r['same_rbit']} | {r['same_encoder_path']} | {r['decoder_path_is_encoders']} | "
              f"{r['max_pixel_diff_16bit']}, {r['pixels_differing']} |")  # fmt: skip
    if args.json:
        from rawbit.files import write_atomic

        write_atomic(args.json, json.dumps(rows, indent=1).encode(), force=True)
    if not all(r["same_rbit"] and r["decoder_path_is_encoders"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
