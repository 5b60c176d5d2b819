"""Packaging for sd4match-sdk.

The Python package is pure except for the fused matching kernel (``kernels/``, docs/kernels.md),
whose one build description is ``kernels/CMakeLists.txt``; this file only drives CMake:

* ``sd4match_sdk._kernels``: the CPU kernel, built whenever a C++17 compiler is present (CMake >= 3.18
  too: the one on PATH, else the ``cmake`` PyPI package as a build requirement).
* ``sd4match_sdk._kernels_cuda``: the CUDA kernel, built when CMake finds a CUDA compiler. It links
  the CUDA runtime statically, and the CPU module holds no CUDA code at all, so importing the CPU
  module never needs CUDA libraries.

Environment switches (read at build time):

* ``SD4MATCH_KERNELS=0`` builds no compiled module at all (the SDK then matches with torch).
* ``SD4MATCH_CUDA=auto|1|0``: auto (default) builds the CUDA module when a CUDA compiler is found and
  skips it with a warning if it fails to build; 1 requires it; 0 skips it.
* ``SD4MATCH_CUDA_ARCH``: compute capabilities, e.g. ``90`` or ``80;90`` or ``90a`` or ``native``
  (default ``75;80;86;89;90`` plus PTX for the newest); CMake's own ``80-real`` syntax passes as is.
* ``NVCC``, ``CUDA_HOME``/``CUDA_PATH``: where the CUDA compiler and toolkit are, when nvcc is not
  on PATH. ``CMAKE_ARGS``: more arguments for the CMake configure step.
"""

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = Path(__file__).parent.resolve()
version: dict = {}
exec((ROOT / "sd4match_sdk" / "_version.py").read_text(), version)

# Ranges we test with (see README "Versions"). torch is installed first from the CPU build
# (`pip install torch==2.13.0`); a range it satisfies makes pip keep it.
INSTALL_REQUIRES = [
    "torch>=2.4,<2.15",
    "diffusers>=0.35,<0.43",
    "accelerate>=1.0",  # diffusers' low-memory loading of the 3.5 GB SD 2.1 weights
    "transformers>=5.0,<6",  # 5.x flattened CLIPTextModel (no `text_model` attribute)
    "safetensors>=0.4",
    "huggingface_hub>=0.34",
    "requests>=2.28",  # sd4match download prompts (resumable HTTP); diffusers depends on it too
    "numpy>=1.24",
    "pillow>=10",
    "opencv-python>=4.8",
    "scipy>=1.10",
    "tqdm>=4.60",
    "onnx>=1.17",
    "onnxruntime>=1.20",
    "onnxscript>=0.2",  # torch.onnx's exporter (sd4match-export)
]

CMAKE_MINIMUM = "3.18"  # kernels/CMakeLists.txt's cmake_minimum_required


def _switch(name: str) -> str:
    """``"on"``, ``"off"`` or ``"auto"`` from an environment variable."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return "on"
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("", "auto"):
        return "auto"
    raise SystemExit(f"{name}={value!r}: use 1, 0 or auto")


@functools.cache
def _cmake_on_path() -> str | None:
    """The cmake on PATH if it is recent enough (else the ``cmake`` PyPI package is a build requirement)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        return None
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", out)
    recent = found and tuple(map(int, found.groups())) >= tuple(map(int, CMAKE_MINIMUM.split(".")))
    return cmake if recent else None


@functools.cache
def _cmake() -> str:
    cmake = _cmake_on_path()
    if cmake is None:
        try:
            import cmake as cmake_package  # the PyPI package, installed through setup_requires

            cmake = str(Path(cmake_package.CMAKE_BIN_DIR) / "cmake")
        except ImportError:
            raise CompileError(
                f"the kernels need CMake >= {CMAKE_MINIMUM}: install it (apt-get install cmake, pip install "
                "cmake) or set SD4MATCH_KERNELS=0 for a pure-Python install"
            ) from None
    return cmake


def _cuda_architectures(value: str) -> str:
    """``SD4MATCH_CUDA_ARCH`` as CMAKE_CUDA_ARCHITECTURES: machine code for every listed GPU plus the
    newest one's PTX (arch-specific targets such as 90a have none); CMake's own syntax passes as is."""
    names = [re.sub(r"^(sm_|compute_)", "", n).replace(".", "") for n in re.split(r"[;, ]+", value.strip()) if n]
    if any(not re.fullmatch(r"\d+[af]?", n) for n in names):
        return ";".join(names)  # native, all, all-major, 80-real, 90-virtual ...
    newest = max(names, key=lambda n: int(re.sub(r"\D", "", n)))
    return ";".join(n if n == newest and n.isdigit() else f"{n}-real" for n in names)


def _cuda_compiler_args() -> list[str]:
    """CMake arguments naming the toolkit of ``NVCC``, ``CUDA_HOME`` or ``CUDA_PATH``. Without them CMake
    looks at CUDACXX and PATH, and /usr/local/cuda/bin/nvcc is the last resort."""
    roots = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates = [os.environ.get("NVCC"), *(str(root / "bin" / "nvcc") for root in roots)]
    if not shutil.which("nvcc") and not os.environ.get("CUDACXX"):
        candidates.append("/usr/local/cuda/bin/nvcc")
    args = [f"-DCUDAToolkit_ROOT={roots[0]}"] if roots else []
    for nvcc in candidates:
        if nvcc and Path(nvcc).is_file() and os.access(nvcc, os.X_OK):
            return [*args, f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    return args


class CMakeExtension(Extension):
    """A module that kernels/CMakeLists.txt builds: its target has the module's own name."""

    def __init__(self, name: str, optional: bool = False):
        super().__init__(name, sources=[], optional=optional)
        self.target = name.rsplit(".", 1)[-1]


class CMakeBuild(build_ext):
    """Configures kernels/ once, then builds each extension's target; setuptools copies the modules on
    (into the wheel, or next to the sources for ``--inplace`` and editable installs)."""

    def build_extension(self, ext: CMakeExtension) -> None:
        build_dir = Path(self.build_temp).resolve() / "kernels"
        if not getattr(self, "_configured", False):
            self._configure(build_dir, Path(self.get_ext_fullpath(ext.name)).resolve().parent)
            self._configured = True
        if ext.target == "_kernels_cuda" and not self._cache_says(build_dir, "SD4MATCH_WITH_CUDA", "ON"):
            print("sd4match kernels: CMake configured no CUDA implementation (see above): CPU module only", flush=True)
            return  # optional (auto mode): setuptools skips the missing file
        jobs = self.parallel or os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or os.cpu_count() or 1
        self._run([_cmake(), "--build", str(build_dir), "--config", "Release", "--target", ext.target, "-j", str(jobs)])
        if not Path(self.get_ext_fullpath(ext.name)).is_file():
            raise CompileError(f"CMake built {ext.target} but not {self.get_ext_fullpath(ext.name)}")

    def _configure(self, build_dir: Path, ext_dir: Path) -> None:
        import pybind11  # a build requirement (pyproject.toml; the [dev] extra for `setup.py build_ext`)

        cuda = _switch("SD4MATCH_CUDA")
        args = [
            f"-DSD4MATCH_VERSION={version['__version__']}",
            "-DSD4MATCH_PYTHON=ON",
            "-DSD4MATCH_KERNELS_TESTS=OFF",
            f"-DSD4MATCH_CUDA={cuda.upper()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            # Single- and multi-config generators alike put the modules where setuptools expects them.
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_dir}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_RELEASE={ext_dir}",
        ]
        if cuda != "off":
            arch = os.environ.get("SD4MATCH_CUDA_ARCH", "").strip()
            # Unset, the default is kernels/CMakeLists.txt's, not one a previous build left in the cache.
            archs = _cuda_architectures(arch) if arch else None
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}" if archs else "-UCMAKE_CUDA_ARCHITECTURES")
            args += _cuda_compiler_args()
        if "CMAKE_GENERATOR" not in os.environ and shutil.which("ninja"):
            args += ["-G", "Ninja"]  # faster than make, and parallel by default
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        configure = [_cmake(), "-S", str(ROOT / "kernels"), "-B", str(build_dir), *args]
        if self._run(configure, check=False):
            return
        print("sd4match kernels: configuring again in a clean build directory", flush=True)
        shutil.rmtree(build_dir, ignore_errors=True)  # a cache from another generator or checkout
        if self._run(configure, check=cuda != "auto"):
            return
        self.warn("configuring the kernels with CUDA failed (output above): building the CPU module only")
        shutil.rmtree(build_dir, ignore_errors=True)
        self._run([*configure, "-DSD4MATCH_CUDA=OFF"])  # the later -D wins

    @staticmethod
    def _cache_says(build_dir: Path, name: str, value: str) -> bool:
        cache = (build_dir / "CMakeCache.txt").read_text()
        return re.search(rf"^{name}:\w+={value}$", cache, re.MULTILINE) is not None

    @staticmethod
    def _run(cmd: list[str], check: bool = True) -> bool:
        """Runs a CMake step with its output on the console (pip shows it when the build fails)."""
        print("+ " + shlex.join(cmd), flush=True)
        result = subprocess.run(cmd, check=False)
        if check and result.returncode != 0:
            raise CompileError(f"{shlex.join(cmd[:2])} ... failed with exit code {result.returncode} (output above)")
        return result.returncode == 0


def kernel_extensions() -> dict:
    """``ext_modules``/``cmdclass``/``setup_requires`` for setup(), or nothing for SD4MATCH_KERNELS=0."""
    if _switch("SD4MATCH_KERNELS") == "off":
        return {}
    cuda = _switch("SD4MATCH_CUDA")
    modules = [CMakeExtension("sd4match_sdk._kernels")]
    if cuda != "off":
        modules.append(CMakeExtension("sd4match_sdk._kernels_cuda", optional=cuda == "auto"))
    # setuptools.build_meta returns setup_requires from get_requires_for_build_*: pip then installs
    # CMake into the isolated build environment only where the machine has none.
    setup_requires = [] if _cmake_on_path() else [f"cmake>={CMAKE_MINIMUM}"]
    return {"ext_modules": modules, "cmdclass": {"build_ext": CMakeBuild}, "setup_requires": setup_requires}


setup(
    name="sd4match-sdk",
    version=version["__version__"],
    description="SD4Match semantic keypoint matching: Stable Diffusion features, learned prompts, "
    "ONNX/TensorRT engines and a fused matching kernel",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sd4match_sdk", "sd4match_sdk.*"]),
    **kernel_extensions(),
    package_data={"sd4match_sdk": ["assets/demo/*", "py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # pybind11: `setup.py build_ext` outside pip's build isolation, and the emulated-CUDA test module;
        # import-linter: tests/test_layers.py checks the package's import layers
        "dev": ["pytest>=8", "tensorboard>=2.14", "onnxscript>=0.2", "pybind11>=2.12", "import-linter>=2.1"],
        "train": ["tensorboard>=2.14"],
        "gpu": ["onnxruntime-gpu>=1.20"],
        "trt": ["tensorrt>=10"],
    },
    entry_points={
        "console_scripts": [
            "sd4match=sd4match_sdk.cli:main",
            "sd4match-export=sd4match_sdk.export.cli:main",
            "sd4match-train=sd4match_sdk.training.cli:run",
            "sd4match-eval=sd4match_sdk.evaluation.cli:run",
        ]
    },
)
