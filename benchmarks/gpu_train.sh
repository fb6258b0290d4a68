#!/usr/bin/env bash
# Turn a lent GPU into a better default model, in one device call of <= 9 minutes.
#
# Here, once (CPU, no device time):   benchmarks/gpu_train.sh prepare
#   - downloads the wheels the device lacks into .whl/ (Python 3.12, manylinux x86-64)
#   - copies a subset of the training photographs into .gpu-data/ (both ignored by git)
# On the device (the `run` tool, carry [".whl", ".gpu-data"], timeout_s 560):
#   benchmarks/gpu_train.sh train [INIT]    # INIT: weights to continue (default: models' default)
# It synthesises DNGs from the photos on the device's cores, continues INIT with the gpu-isp
# preset until ~7 minutes have passed (SIGTERM saves the checkpoint), then exports
# $OUT/model.safetensors with $OUT/log.csv and $OUT/train.txt. Resume a later call with
# INIT=the returned weights; then evaluate and ship as the model card says.
#
# CPU check of the whole path: DEVICE=cpu STEPS=3 BATCH=2 PATCH=128 benchmarks/gpu_train.sh train
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: benchmarks/gpu_train.sh prepare|train [INIT]}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ "$mode" = prepare ]; then
  mkdir -p .whl .gpu-data/srgb
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  for pkg in compressai==1.2.8 rawpy==0.28.0 construct==2.10.70 click==8.5.1 tqdm==4.70.1 \
             pytorch-msssim==1.0.0 einops pillow-jxl-plugin==1.3.8 pypng==0.20220715.0; do
    $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$pkg" || echo "could not fetch $pkg (the device may have it)"
  done
  src=${SRGB:-../shared/data/srgb/train}
  ls "$src" | sort | awk 'NR % 2 == 1' | head -${PHOTOS:-40} | while read -r f; do cp "$src/$f" .gpu-data/srgb/; done
  du -sh .whl .gpu-data
  exit 0
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
out=${OUT:-gpu-train-out}
mkdir -p "$out"
init=${2:-default}
work=$(mktemp -d)
$py -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee "$out/train.txt"
# Synthesis is per photo and single-threaded: one process per core.
ls .gpu-data/srgb | xargs -P "$(nproc)" -I{} sh -c \
  "mkdir -p $work/src-{} && cp .gpu-data/srgb/{} $work/src-{}/ && $py -m rawbit synth $work/src-{} -o $work/synth >/dev/null 2>&1 || true"
echo "$(ls "$work/synth" | wc -l) DNGs synthesised" | tee -a "$out/train.txt"
set +e
timeout -s TERM "${GPU_TRAIN_SECONDS:-420}" $py -m rawbit train --preset gpu-isp --init "$init" \
  --data "$work/synth" --out "$work/run" --device "${DEVICE:-cuda}" --cache "$work/cache" \
  ${STEPS:+--set steps=$STEPS} ${BATCH:+--set batch_size=$BATCH} ${PATCH:+--set patch=$PATCH} >>"$out/train.txt" 2>&1
echo "train exit $?" | tee -a "$out/train.txt"
set -e
$py -m rawbit train --out "$work/run" --export "$out/model.safetensors" 2>&1 | tee -a "$out/train.txt"
cp "$work/run/log.csv" "$out/" 2>/dev/null || true
ls -la "$out"
