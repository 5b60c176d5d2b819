#!/usr/bin/env bash
# One GPU session for issue 10's figures, run as a single prepared command (at most 8 minutes on an H200):
#   0. the fused matching kernel: the carried cp312 build if it runs on the GPU, else built there (about 20 s),
#      so that the SDK rows match as an installed package does (each table's header says which matcher ran)
#   1. the CUDA-only paths of the test suite: the CUDA kernel against the torch matcher (tests/kernels, about
#      10 s), then tests/features/test_cuda.py: float32 parity
#      with the CPU reference and no TF32 flag flips, the float16 VAE default, pinned pipelined batches,
#      ORT I/O binding (skipped without onnxruntime-gpu), compiled (CUDA graphs) vs eager for every prompt
#      kind. Alongside, one process per prompt kind runs only the sdk-compiled row of steps 2 and 3, so
#      that their cold compilation (minutes) fills the shared inductor cache while the tests run: its
#      "first s" (compile_cold_*.log) is the cold compilation, step 2's is the cache reused by a new process
#   2. bench_pairs, Single prompt: SD 2.1 architecture (random weights), 768 px, E=8, batch 1 and 8, every
#      row that can run (official, reference, sdk, sdk-compiled, engines where their runtime is importable)
#   3. bench_pairs, CPM prompt: official, reference, sdk, sdk-compiled, one timed pass each
# Logs and JSON go to $OUT (or /tmp/sd4match-gpu): env.log, kernels.log (kernels_build.log if it built),
# cuda_tests.log, compile_cold_{single,cpm}.log, pairs_single.{log,json}, pairs_cpm.{log,json}. Every step
# has a time limit; steps 2 and 3 share what is left of 470 s (step 3 keeps 120), and bench_pairs shares its
# --time-limit among its rows, so the whole run ends within 8 minutes and still prints every table;
# bench_pairs rewrites its JSON after every row.
#
# The GPU machine has no diffusers: carry its wheels in .whl/ (ignored by git), made on this machine with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# and build the kernel modules for the GPU machine's Python 3.12 with this machine's nvcc (13.0, as there;
# PY312 as below, with pybind11 and cmake in its venv; 16 s here, for sm_90 only):
#   SD4MATCH_CUDA=1 SD4MATCH_CUDA_ARCH=90 /tmp/gpu-versions/bin/python setup.py -q build_ext --inplace
# then run, carrying .whl and the two sd4match_sdk/_kernels*.cpython-312-x86_64-linux-gnu.so files:
#   device run --carry .whl <the two .so paths> -- bash benchmarks/gpu_session.sh
# Rehearse it here first (about 7 minutes on 2 CPU cores): REHEARSE=1 OUT=/tmp/rehearsal bash benchmarks/gpu_session.sh
# runs every step on the tiny model on the CPU, the CUDA tests included (SD4MATCH_GPU_TESTS_ON=cpu: they
# then leave out only what the CPU cannot show), with every time limit doubled. PYTHON=... picks the
# interpreter: rehearse under the GPU machine's versions (device tool, KINDS.md), in a venv of their own
# (PY312: a Python 3.12, here /root/.pyenv/versions/3.12.1/bin/python; torch 2.11 comes from PyPI as its CUDA
# build, about 5 GB, 78 s to install here):
#   PY312 -m venv /tmp/gpu-versions && /tmp/gpu-versions/bin/pip install torch==2.11.0 transformers==5.17.0 \
#     numpy==2.5.2 onnx==1.23.1 onnxruntime==1.30.0 onnxscript==0.7.2 accelerate==1.15.0 safetensors==0.8.0 \
#     huggingface_hub==1.33.0 tokenizers==0.23.2 diffusers==0.42.1 opencv-python-headless scipy tqdm pillow pytest
#   REHEARSE=1 PYTHON=/tmp/gpu-versions/bin/python OUT=/tmp/rehearsal bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3} HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/sd4match-inductor}  # shared by every step
OUT=${OUT:-/tmp/sd4match-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
section() { echo; echo "=================== $* ($(date +%T))"; }
PAIRS="benchmarks/bench_pairs.py --model sd21 --device cuda --image-size 768 --ensemble 8 --pairs 8 --batch 8 --repeats 3"
SLOW=1  # time limits are multiplied by this
if [ "${REHEARSE:-0}" = 1 ]; then  # REHEARSE=1 on a CPU machine: every step on the tiny model, so a broken step
  # shows up before device time is spent (nvidia-smi is absent)
  PAIRS="benchmarks/bench_pairs.py --model tiny --device cpu --image-size 256 --ensemble 2 --pairs 2 --batch 2 --repeats 1"
  export SD4MATCH_GPU_TESTS_ON=cpu SD4MATCH_CUDA=auto DEVICE=cpu  # the CPU kernel stands in for the CUDA one
  SLOW=2
fi
limit() { echo $(($1 * SLOW)); }
BUDGET=$(limit 470)  # seconds for the whole script (bash's SECONDS counts from its start): steps 2 and 3 share what is left

section environment
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PYTHON -c "import torch, diffusers, transformers, onnxruntime as o; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'transformers', transformers.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
  lscpu | grep 'Model name'
} 2>&1 | tee "$OUT/env.log"

section "0. the fused matching kernel"
KERNEL_CHECK="from sd4match_sdk import kernels; raise SystemExit(not kernels.kernel_supports('${DEVICE:-cuda}'))"
{
  if $PYTHON -c "$KERNEL_CHECK" 2>/dev/null; then
    echo "the carried kernel build runs here"
  else  # not carried, or built against other system libraries: build it here (CMake, nvcc and pybind11 are there)
    echo "building the kernel modules (log: kernels_build.log)"
    SD4MATCH_CUDA=${SD4MATCH_CUDA:-1} SD4MATCH_CUDA_ARCH=90 timeout "$(limit 60)" $PYTHON setup.py -q build_ext --inplace \
      >"$OUT/kernels_build.log" 2>&1
    $PYTHON -c "$KERNEL_CHECK" && echo "built; it runs here" || echo "no fused kernel: the SDK rows match with torch"
  fi
} 2>&1 | tee "$OUT/kernels.log"

section "1. CUDA-only paths (pytest); steps 2 and 3's compiled rows compiled alongside"
timeout "$(limit 190)" bash -c "$PYTHON $PAIRS --prompt-kind single --rows sdk-compiled --repeats 1 --json $OUT/compile_cold_single.json \
  >$OUT/compile_cold_single.log 2>&1; $PYTHON $PAIRS --prompt-kind cpm --rows sdk-compiled --repeats 1 \
  --json $OUT/compile_cold_cpm.json >$OUT/compile_cold_cpm.log 2>&1" &
compiling=$!
timeout "$(limit 150)" $PYTHON -m pytest -q -k "cuda and not emulated" -p no:cacheprovider -rs --durations=5 \
  tests/kernels/test_kernels.py tests/kernels/test_ksa_equivalence.py tests/features/test_cuda.py 2>&1 \
  | tee "$OUT/cuda_tests.log"
wait $compiling
echo "compiled alongside (exit $?):"; grep -E "^sdk-compiled" "$OUT/compile_cold_single.log" "$OUT/compile_cold_cpm.log"

section "2. bench_pairs, Single prompt, SD 2.1 architecture, 768 px, E=8"
step=$((BUDGET - SECONDS - $(limit 120)))  # what is left, less step 3's share
timeout "$step" $PYTHON $PAIRS --prompt-kind single --time-limit "$((step - $(limit 10)))" --json "$OUT/pairs_single.json" 2>&1 \
  | tee "$OUT/pairs_single.log"

section "3. bench_pairs, CPM prompt"
step=$((BUDGET - SECONDS))
timeout "$step" $PYTHON $PAIRS --prompt-kind cpm --repeats 1 --rows official,reference,sdk,sdk-compiled --time-limit "$((step - $(limit 10)))" \
  --json "$OUT/pairs_cpm.json" 2>&1 | tee "$OUT/pairs_cpm.log"
section done
