#!/usr/bin/env bash
# The CUDA path, checked on a GPU machine: the CUDA tests, 12 MP encode/decode speed on the GPU,
# and training speed on the GPU for the cpu and paper presets.
#
#   benchmarks/gpu_check.sh RAW_DIR [OUT_DIR]     # RAW_DIR: a few RAW/DNG files to train on
set -uo pipefail
data=${1:?usage: benchmarks/gpu_check.sh RAW_DIR [OUT_DIR]}
out=${2:-gpu-check}
mkdir -p "$out"
runs=$(mktemp -d)  # training runs (checkpoints are large); only their logs are kept in OUT_DIR
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/env.txt"
timeout 180 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.txt"
timeout 200 $py benchmarks/speed.py --models rbn-lite,rbn-paper --device cuda --threads 16 \
  --json "$out/speed-cuda.json" 2>&1 | tee "$out/speed-cuda.txt"
# Steps per second between step 50 and the last step: the first steps build the data cache.
for preset in cpu paper; do
  timeout 150 $py -m rawbit train --preset "$preset" --data "$data" --out "$runs/$preset" \
    --device cuda --set steps=300 --set val_every=100000 --set checkpoint_every=100000 \
    >"$out/train-$preset.txt" 2>&1
  $py - "$runs/$preset/log.csv" "$preset" <<'PY' | tee -a "$out/train-speed.txt"
import csv, sys
rows = {(int(s), k): float(v) for s, k, v in list(csv.reader(open(sys.argv[1])))[1:]}
t = {s: v for (s, k), v in rows.items() if k == "elapsed_s"}
a, b = 50, max(t)
print(f"{sys.argv[2]}: {(b - a) / (t[b] - t[a]):.2f} steps/s (steps {a}-{b}), loss {rows[(b, 'loss')]:.3f}")
PY
done
