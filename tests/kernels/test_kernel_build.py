"""Build checks: the CUDA source compiles with nvcc (nothing runs it here), the CMake library builds
and passes its C++ smoke test, and the built modules carry the package's version and no more CUDA
than they should. Each skips with a reason when its tool or module is missing."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import sd4match_sdk

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "kernels"


def find_nvcc() -> str | None:
    """nvcc as the build looks for it: ``$NVCC``, ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, PATH, /usr/local/cuda."""
    roots = [os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates = [os.environ.get("NVCC"), *(str(Path(r) / "bin" / "nvcc") for r in roots), shutil.which("nvcc")]
    for candidate in [*candidates, "/usr/local/cuda/bin/nvcc"]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


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


def _cuda_module_path() -> Path | None:
    spec = importlib.util.find_spec("sd4match_sdk._kernels_cuda")
    return Path(spec.origin) if spec is not None and spec.origin else None


def test_cpu_module_carries_the_package_version(cpu_module):
    assert cpu_module.__version__ == sd4match_sdk.__version__


def test_cuda_module_imports_without_a_gpu_and_carries_the_package_version():
    """The CUDA runtime is linked statically: the module imports on any machine (its calls then report
    the missing driver or device), so once built it must import here too."""
    if _cuda_module_path() is None:
        pytest.skip("sd4match_sdk._kernels_cuda is not built (no CUDA compiler, or SD4MATCH_CUDA=0)")
    module = importlib.import_module("sd4match_sdk._kernels_cuda")
    assert module.__version__ == sd4match_sdk.__version__
    assert not module.EMULATED


def test_emulated_cuda_module_carries_the_package_version(emulated_cuda_module):
    assert emulated_cuda_module.__version__ == sd4match_sdk.__version__


def test_cpu_module_holds_no_cuda_runtime(cpu_module):
    """The static CUDA runtime loads the driver with dlopen("libcuda.so.1"): the string is in the CUDA
    module and must not be in the CPU one, which imports where no CUDA library exists."""
    assert b"libcuda.so" not in Path(cpu_module.__file__).read_bytes()
    cuda = _cuda_module_path()
    if cuda is not None:
        assert b"libcuda.so" in cuda.read_bytes()
