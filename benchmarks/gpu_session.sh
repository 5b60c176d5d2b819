#!/usr/bin/env bash
# One GPU session for the figures the issues ask for, run as a single prepared command:
#   1. the fused kernel: build for sm_90, CUDA-vs-torch checks, GPU benchmark (bench_kernel)
#   2. feature extraction, SD 2.1 architecture (random weights), fp16, E=8: truncated vs full UNet
#   3. training throughput at batch 9, SD 2.1 architecture (random weights), fp16 autocast
# Logs go to $OUT (or /tmp/sd4match-gpu). diffusers may be missing on the GPU machine: put its
# wheel in .whl/ and it is installed to /tmp/site first.
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3} HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/sd4match-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
section() { echo; echo "=================== $* ($(date +%T))"; }

section environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PYTHON -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"

section "1. fused kernel"
timeout 330 bash benchmarks/gpu_kernel_check.sh 2>&1 | tee "$OUT/kernel.log"

section "2. feature extraction, SD 2.1 architecture, fp16, E=8"
timeout 150 $PYTHON benchmarks/bench_features.py --full --device cuda --dtype fp16 --ensemble 8 --repeats 5 \
  --json "$OUT/features.json" 2>&1 | tee "$OUT/features.log"

section "3. training steps/s at batch 9, SD 2.1 architecture"
timeout 150 $PYTHON benchmarks/bench_train.py --full --device cuda --steps 10 --json "$OUT/bench_train.json" 2>&1 \
  | tee "$OUT/train.log"
section done
