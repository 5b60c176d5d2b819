#!/usr/bin/env bash
# One-shot GPU check of the fused kernel (build, checks against torch, benchmark); see
# gpu_kernel_check.py. Needs torch with CUDA, pybind11, CMake and nvcc; about 2-3 minutes on an H100.
#   bash benchmarks/gpu_kernel_check.sh            (SD4MATCH_CUDA_ARCH=90 by default)
cd "$(dirname "$0")/.." || exit 1
exec timeout 560 "${PYTHON:-python}" benchmarks/gpu_kernel_check.py "$@"
