"""Fixtures for the C++ example (examples/cpp): fetched dependencies, the CMake build, engines.

The dependencies (ONNX Runtime headers from Debian, the wheel's library) and the build live in the
repository's gitignored ``build/`` (``build/cpp-deps``, ``build/cpp-example``), so a second test run
only rebuilds what changed. Everything here skips with the reason when a tool is missing or the
Debian mirror cannot be reached; a build that fails is a test failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpp"
DEPS = Path(os.environ.get("SD4MATCH_CPP_DEPS", ROOT / "build" / "cpp-deps"))
BUILD = Path(os.environ.get("SD4MATCH_CPP_BUILD", ROOT / "build" / "cpp-example"))
CLASS_NAMES = ("dog", "cat", "bird")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _wheel_library() -> str | None:
    """File name of the onnxruntime wheel's ``libonnxruntime.so.1.X.Y`` for this interpreter."""
    try:
        import onnxruntime
    except ImportError:
        return None
    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(p.name for p in capi.glob("libonnxruntime.so.1.*"))
    return libs[0] if len(libs) == 1 else None


@pytest.fixture(scope="session")
def cpp_deps() -> Path:
    """``examples/cpp/fetch_deps.sh build/cpp-deps``, skipped when already done for this wheel."""
    for tool in ("cmake", "apt-get", "dpkg", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: the C++ example needs CMake, a C++17 compiler and apt (Debian/Ubuntu)")
    library = _wheel_library()
    if library is None:
        pytest.skip("the onnxruntime wheel (with capi/libonnxruntime.so.1.X.Y) is not installed")
    marker = DEPS / "lib" / "ONNXRUNTIME_WHEEL_LIBRARY"
    ready = (
        marker.is_file()
        and marker.read_text().strip() == library
        and (DEPS / "usr" / "include" / "onnxruntime" / "onnxruntime_cxx_api.h").is_file()
        and (DEPS / "usr" / "include" / "nlohmann" / "json.hpp").is_file()
    )
    if not ready:
        result = _run(["bash", str(EXAMPLE / "fetch_deps.sh"), str(DEPS)], env={**os.environ, "PYTHON": sys.executable})
        if result.returncode != 0:
            if "apt-get update failed" in result.stderr or "apt-get download" in result.stderr:
                pytest.skip(
                    f"cannot fetch libonnxruntime-dev from Debian (mirror unreachable?): {result.stderr.strip()[-300:]}"
                )
            if "keyring" in result.stderr:
                pytest.skip(f"no Debian archive keyring: {result.stderr.strip()[-300:]}")
            pytest.fail(f"fetch_deps.sh failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return DEPS


@pytest.fixture(scope="session")
def cpp_build(cpp_deps: Path) -> Path:
    """Configure (once) and build examples/cpp with CMake; the directory holding the programs."""
    configure = [
        "cmake", "-S", str(EXAMPLE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
        f"-DONNXRUNTIME_ROOT={cpp_deps}", "-DSD4MATCH_TENSORRT=OFF", "-DSD4MATCH_CUDA=OFF",
    ]  # fmt: skip
    result = _run(configure)
    if result.returncode != 0 and (BUILD / "CMakeCache.txt").exists():
        shutil.rmtree(BUILD)  # a cache from another checkout or generator: start over once
        result = _run(configure)
    for package, dev in (("PNG", "libpng-dev"), ("JPEG", "libjpeg-dev"), ("OpenSSL", "libssl-dev")):
        if result.returncode != 0 and f"Could NOT find {package}" in result.stderr:
            pytest.skip(f"the C++ example needs {dev} (apt-get install cmake g++ libpng-dev libjpeg-dev libssl-dev)")
    assert result.returncode == 0, f"cmake configure failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    result = _run(["cmake", "--build", str(BUILD), "-j", str(min(4, os.cpu_count() or 1))])
    assert result.returncode == 0, f"cmake --build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return BUILD


@pytest.fixture(scope="session")
def cpp_match(cpp_build: Path) -> Path:
    return cpp_build / "sd4match_match"


@pytest.fixture(scope="session")
def cpp_preprocess(cpp_build: Path) -> Path:
    return cpp_build / "sd4match_preprocess"


@pytest.fixture(scope="session")
def cpp_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cpp-engines")


def _export(out: Path, **kwargs) -> Path:
    from sd4match_sdk.export import ExportConfig, export_engine

    export_engine(ExportConfig(out=str(out), **kwargs), log=lambda *a, **k: None)
    return out


@pytest.fixture(scope="session")
def cpp_class_engine(cpp_engines: Path, tiny_sd: Path) -> Path:
    """Class prompt (class_index input) at 256 px, E=2, max_batch 1 (every call is chunked) and
    every graph's weights in an external ``.onnx.data`` file."""
    from sd4match_sdk.config import FeatureConfig
    from sd4match_sdk.prompts import PromptKind, PromptWeights, save_prompt

    g = torch.Generator().manual_seed(0)
    weights = PromptWeights(
        PromptKind.CLASS, token_embeds={c: torch.randn((1, 77, 32), generator=g) for c in CLASS_NAMES}
    )
    prompt = save_prompt(cpp_engines / "class.safetensors", weights)
    return _export(
        cpp_engines / "engine_class", model=str(tiny_sd), prompt=str(prompt),
        feature=FeatureConfig(image_size=256, timestep=50, ensemble=2), max_batch=1, external_data_threshold=0,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cpp_cpm_engine(cpp_engines: Path, tiny_sd: Path, tiny_dino: Path) -> Path:
    """CPM prompt (prompt_net + DINOv2 preprocessing) at 256 px, E=2."""
    from sd4match_sdk.config import FeatureConfig
    from sd4match_sdk.models.cpm import ConditionalPromptModule, CPMConfig
    from sd4match_sdk.prompts import PromptKind, PromptWeights, save_prompt

    torch.manual_seed(0)
    cpm = ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32))
    prompt = save_prompt(cpp_engines / "cpm.safetensors", PromptWeights(PromptKind.CPM, cpm_state=cpm.state_dict()))
    return _export(
        cpp_engines / "engine_cpm", model=str(tiny_sd), prompt=str(prompt), dino=str(tiny_dino),
        feature=FeatureConfig(image_size=256, timestep=50, ensemble=2), max_batch=4,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cpp_text768_engine(cpp_engines: Path, tiny_sd: Path) -> Path:
    """The empty text prompt at the faithful 768 px frame, E=1."""
    from sd4match_sdk.config import FeatureConfig

    return _export(
        cpp_engines / "engine_text768", model=str(tiny_sd), prompt=None,
        feature=FeatureConfig(image_size=768, timestep=50, ensemble=1), max_batch=4,
    )  # fmt: skip
