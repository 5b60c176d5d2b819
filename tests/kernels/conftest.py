"""Fixtures of the kernel tests: one ``runner`` per implementation (CPU, CUDA, CUDA emulated on
the CPU), each a function ``(source, target, points, sigma, beta) -> (coords, scores)`` that takes
CPU tensors and returns CPU tensors.

The compiled CPU module must be built (``pip install -e .`` or ``python setup.py build_ext
--inplace``): its tests fail when it is missing, unless ``SD4MATCH_KERNELS=0`` says the build
was skipped on purpose. CUDA runners skip without a device or without the built module.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from ksa_cases import call_module

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "kernels"


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


def build_emulated_cuda_module(out_dir: Path) -> Path:
    """Compiles ``ksa_cuda.cu`` as plain C++ against ``kernels/emu/cuda_emu.hpp`` into a Python
    module ``_kernels_cuda_emu``: every block runs as real CPU threads with real barriers."""
    import pybind11

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler for the emulated CUDA build")
    probe = out_dir / "probe.cpp"
    probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    if subprocess.run([cxx, "-std=c++20", "-pthread", str(probe), "-o", str(out_dir / "probe")], capture_output=True).returncode:
        pytest.skip(f"{cxx} lacks C++20 <barrier>, which the CUDA emulation needs")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = out_dir / f"_kernels_cuda_emu{suffix}"
    cmd = [
        cxx, "-std=c++20", "-O1", "-g0", "-shared", "-fPIC", "-pthread", "-w",
        "-DSD4M_WITH_CUDA=1", "-DSD4M_CUDA_EMULATION=1", "-DSD4M_PY_MODULE_NAME=_kernels_cuda_emu",
        f"-I{KERNELS / 'include'}", f"-I{KERNELS / 'src'}", f"-I{KERNELS / 'emu'}",
        f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
        "-x", "c++", str(KERNELS / "src" / "ksa_cuda.cu"),
        "-x", "none", str(KERNELS / "python" / "bind_cuda.cpp"), str(KERNELS / "src" / "common.cpp"),
        "-o", str(target),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"emulated CUDA build failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}")
    return target


@pytest.fixture(scope="session")
def emulated_cuda_module(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cuda_emu")
    build_emulated_cuda_module(out_dir)
    sys.path.insert(0, str(out_dir))
    try:
        return importlib.import_module("_kernels_cuda_emu")
    finally:
        sys.path.remove(str(out_dir))


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
