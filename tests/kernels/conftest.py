"""Fixtures of the kernel tests: one ``runner`` per implementation (CPU, CUDA, CUDA emulated on
the CPU), each a function ``(source, target, points, sigma, beta) -> (coords, scores)`` that takes
CPU tensors and returns CPU tensors.

The compiled CPU module must be built (``pip install -e .`` or ``python setup.py build_ext
--inplace``): its tests fail when it is missing, unless ``SD4MATCH_KERNELS=0`` says the build
was skipped on purpose. CUDA runners skip without a device or without the built module. The
emulated CUDA module is built here, at test time, from the same CMake description as the others
(kernels/CMakeLists.txt, target ``_kernels_cuda_emu``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ksa_cases import call_module

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "kernels"
EMU_BUILD = ROOT / "build" / "kernels-emu"


def _import(name: str):
    try:
        return importlib.import_module(f"sd4match_sdk.{name}")
    except ImportError as exc:
        return exc


@pytest.fixture(scope="session")
def cpu_module():
    module = _import("_kernels")
    if isinstance(module, Exception):
        if os.environ.get("SD4MATCH_KERNELS", "").strip().lower() in ("0", "off", "false", "no"):
            pytest.skip("SD4MATCH_KERNELS=0: the compiled kernel was not built")
        pytest.fail(
            f"sd4match_sdk._kernels is not built ({module}); run `python setup.py build_ext --inplace` "
            "or `pip install -e .` (set SD4MATCH_KERNELS=0 to skip these tests on purpose)"
        )
    return module


@pytest.fixture(scope="session")
def cuda_module():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    module = _import("_kernels_cuda")
    if isinstance(module, Exception):
        pytest.skip(f"sd4match_sdk._kernels_cuda is not built ({module})")
    return module


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _check(cmd: list[str], result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise RuntimeError(f"emulated CUDA build failed:\n{' '.join(cmd)}\n{output}")


def build_emulated_cuda_module(build_dir: Path = EMU_BUILD) -> Path:
    """Builds the CMake target ``_kernels_cuda_emu`` (kernels/CMakeLists.txt with
    SD4MATCH_CUDA_EMULATION=ON): ``ksa_cuda.cu`` compiled as plain C++ against
    ``kernels/emu/cuda_emu.hpp``, every block run as real CPU threads with real barriers. The build
    directory is kept (gitignored ``build/``), so a second run only rebuilds what changed. Returns the
    directory holding the module."""
    import pybind11

    import sd4match_sdk

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found: the emulated CUDA module is built with CMake")
    configure = [
        cmake, "-S", str(KERNELS), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
        "-DSD4MATCH_CUDA=OFF", "-DSD4MATCH_KERNELS_TESTS=OFF", "-DSD4MATCH_CUDA_EMULATION=ON",
        f"-DSD4MATCH_VERSION={sd4match_sdk.__version__}", f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", *(["-G", "Ninja"] if shutil.which("ninja") else []),
    ]  # fmt: skip
    result = _run(configure)
    if result.returncode != 0 and (build_dir / "CMakeCache.txt").exists():
        shutil.rmtree(build_dir)  # a cache from another checkout or generator: start over once
        result = _run(configure)
    if result.returncode != 0 and "<barrier>" in result.stderr:
        pytest.skip(f"the CUDA emulation needs C++20 <barrier>: {result.stderr.strip()[-300:]}")
    _check(configure, result)
    build = [cmake, "--build", str(build_dir), "--target", "_kernels_cuda_emu", "-j", str(os.cpu_count() or 1)]
    _check(build, _run(build))
    return build_dir


@pytest.fixture(scope="session")
def emulated_cuda_module():
    module_dir = build_emulated_cuda_module()
    sys.path.insert(0, str(module_dir))
    try:
        return importlib.import_module("_kernels_cuda_emu")
    finally:
        sys.path.remove(str(module_dir))


RUNNERS = ["cpu", "cuda", "cuda_emulated"]


@pytest.fixture(params=RUNNERS)
def runner(request):
    """``run(source, target, points, sigma=7, beta=0.04, flags=0) -> (coords, scores)`` on CPU tensors.

    ``flags`` are the C API's SD4M_KSA_* bits (CUDA only; the CPU ignores them)."""
    kind = request.param
    if kind == "cpu":
        module = request.getfixturevalue("cpu_module")

        def run(source, target, points, sigma=7.0, beta=0.04, flags=0):
            return call_module(module, source, target, points, 0, sigma=sigma, beta=beta)

    elif kind == "cuda":
        module = request.getfixturevalue("cuda_module")

        def run(source, target, points, sigma=7.0, beta=0.04, flags=0):
            dev = torch.device("cuda")
            pts = None if points is None else points.to(dev)
            stream = torch.cuda.current_stream().cuda_stream
            coords, scores = call_module(
                module, source.to(dev), target.to(dev), pts, stream, 0, 0, flags, sigma=sigma, beta=beta
            )
            torch.cuda.synchronize()
            return coords.cpu(), scores.cpu()

    else:
        module = request.getfixturevalue("emulated_cuda_module")

        def run(source, target, points, sigma=7.0, beta=0.04, flags=0):
            return call_module(module, source, target, points, 0, 0, 0, flags, sigma=sigma, beta=beta)

    run.kind = kind
    return run
