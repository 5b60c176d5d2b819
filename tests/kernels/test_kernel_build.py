"""Build checks: the CUDA source compiles with nvcc (nothing runs it here) and the CMake library
builds and passes its C++ smoke test. Each skips with a reason when its tool is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "kernels"
sys.path.insert(0, str(KERNELS))
from build_support import find_nvcc  # noqa: E402


def test_cuda_source_compiles_with_nvcc(tmp_path):
    """sm_90 machine code plus portable compute_75 PTX; the fp16 tile kernels must not spill."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME or NVCC to run this check)")
    cmd = [
        nvcc, "-c", str(KERNELS / "src" / "ksa_cuda.cu"), "-o", str(tmp_path / "ksa_cuda.o"),
        "-std=c++17", "-O3", "-DSD4M_WITH_CUDA=1", "-I", str(KERNELS / "include"), "-I", str(KERNELS / "src"),
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_75,code=compute_75",
        "-Xptxas", "-v", "-Xcompiler", "-fPIC",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    # ptxas -v: "Compiling entry function '<name>' for 'sm_90'", then "... N bytes spill stores ..."
    half_tiles = []
    for chunk in result.stderr.split("Compiling entry function '")[1:]:
        name = chunk.split("'", 1)[0]
        spills = re.search(r"(\d+) bytes spill stores", chunk)
        if "tile_kernelI6__half" in name and "for 'sm_90'" in chunk.split("\n", 1)[0]:
            half_tiles.append((name, int(spills.group(1)) if spills else -1))
    assert len(half_tiles) == 2, result.stderr[-2000:]
    assert all(spills == 0 for _, spills in half_tiles), half_tiles


def test_cmake_library_and_cpp_smoke_test(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    build = tmp_path / "build"
    steps = [
        [cmake, "-S", str(KERNELS), "-B", str(build), "-DSD4MATCH_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release"],
        [cmake, "--build", str(build), "-j", "2"],
        [str(build / "sd4match_kernels_smoke")],
    ]
    for cmd in steps:
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "OK" in result.stdout
