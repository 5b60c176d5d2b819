"""setuptools glue for the kernel extensions (imported by ../setup.py; no third-party imports at
module level except pybind11's setup helpers, which pyproject.toml lists as a build requirement).

The CPU module is a plain pybind11 extension. The CUDA module compiles ``src/ksa_cuda.cu`` with
nvcc into an object file first and links it, with the CUDA runtime as a static library, into an
ordinary pybind11 extension, so the C++ side needs no CUDA-aware setuptools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

DEFAULT_CUDA_ARCHS = "75;80;86;89;90"

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def _switch(name: str) -> str:
    """``"on"``, ``"off"`` or ``"auto"`` from an environment variable."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return "on"
    if value in _FALSE:
        return "off"
    if value in ("", "auto"):
        return "auto"
    raise SystemExit(f"{name}={value!r}: use 1, 0 or auto")


def find_nvcc() -> str | None:
    """nvcc from ``$NVCC``, ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, PATH or /usr/local/cuda."""
    candidates = [os.environ.get("NVCC")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(Path(candidate).resolve())
    return None


def _has_headers(root: Path) -> bool:
    return (root / "include" / "cuda_runtime.h").is_file() or (
        root / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h"
    ).is_file()


def cuda_home(nvcc: str) -> Path:
    """The toolkit root: ``$CUDA_HOME``/``$CUDA_PATH``, the directory above nvcc's ``bin``, or what
    nvcc reports as its ``TOP`` (nvcc may be a wrapper script outside the toolkit)."""
    candidates = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates.append(Path(nvcc).resolve().parent.parent)
    for root in candidates:
        if _has_headers(root):
            return root
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cu"
        probe.write_text("")
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", str(probe)], capture_output=True, text=True, timeout=60)
            for line in (out.stdout + out.stderr).splitlines():
                if "TOP=" in line:
                    root = Path(line.split("TOP=", 1)[1].strip().strip('"')).resolve()
                    if _has_headers(root):
                        return root
        except (OSError, subprocess.SubprocessError):
            pass
    return Path("/usr/local/cuda")


def cuda_library_dir(home: Path) -> Path:
    for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib", "lib/x64"):
        if (home / sub / "libcudart_static.a").is_file() or (home / sub / "cudart_static.lib").is_file():
            return home / sub
    return home / "lib64"


def gencode_flags(archs: str) -> list[str]:
    """nvcc ``-gencode`` flags for ``"80;90"`` style lists (PTX of the newest is embedded too)."""
    archs = archs.replace(",", ";").replace(" ", ";")
    names = [a for a in archs.split(";") if a]
    if names == ["native"]:
        return ["-arch=native"]
    flags = []
    for name in names:
        name = name.replace("sm_", "").replace("compute_", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{name},code=sm_{name}")
    newest = max(names, key=lambda n: int("".join(ch for ch in n if ch.isdigit()) or 0))
    newest = newest.replace("sm_", "").replace("compute_", "").replace(".", "")
    if not newest.endswith("a"):  # arch-specific targets (90a) have no forward-compatible PTX
        flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    return flags


def _host_flags() -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/fp:contract"]
    return ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]


def kernel_build_config(root: Path) -> dict:
    """``ext_modules`` and ``cmdclass`` for setup(), or nothing when SD4MATCH_KERNELS=0."""
    if _switch("SD4MATCH_KERNELS") == "off":
        return {}
    from pybind11.setup_helpers import Pybind11Extension, build_ext
    from setuptools.errors import CompileError

    include_dirs = ["kernels/include", "kernels/src"]
    link_args = [] if sys.platform == "win32" else ["-pthread"]
    cpu = Pybind11Extension(
        "sd4match_sdk._kernels",
        sources=["kernels/python/bind_cpu.cpp", "kernels/src/common.cpp", "kernels/src/ksa_cpu.cpp"],
        include_dirs=include_dirs,
        cxx_std=17,
        extra_compile_args=_host_flags(),
        extra_link_args=link_args,
    )
    ext_modules = [cpu]

    cuda_mode = _switch("SD4MATCH_CUDA")
    nvcc = find_nvcc() if cuda_mode != "off" else None
    if cuda_mode == "on" and nvcc is None:
        raise SystemExit("SD4MATCH_CUDA=1 but nvcc was not found (set CUDA_HOME or NVCC)")
    if nvcc is not None:
        home = cuda_home(nvcc)
        cuda = Pybind11Extension(
            "sd4match_sdk._kernels_cuda",
            sources=["kernels/python/bind_cuda.cpp", "kernels/src/common.cpp"],
            include_dirs=include_dirs + [str(home / "include"), str(home / "targets" / "x86_64-linux" / "include")],
            define_macros=[("SD4M_WITH_CUDA", "1")],
            cxx_std=17,
            extra_compile_args=_host_flags(),
            library_dirs=[str(cuda_library_dir(home))],
            libraries=["cudart_static"] + ([] if sys.platform == "win32" else ["rt", "dl", "pthread"]),
            extra_link_args=link_args,
        )
        cuda.optional = cuda_mode == "auto"  # setuptools then warns and goes on if it fails
        cuda.cuda_sources = ["kernels/src/ksa_cuda.cu"]
        ext_modules.append(cuda)

    class BuildExt(build_ext):
        """Compiles ``ext.cuda_sources`` with nvcc and links the objects into the extension."""

        def build_extension(self, ext):
            sources = getattr(ext, "cuda_sources", None)
            if sources:
                ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(sources)
            super().build_extension(ext)

        def _compile_cuda(self, sources: list[str]) -> list[str]:
            archs = os.environ.get("SD4MATCH_CUDA_ARCH", "").strip() or DEFAULT_CUDA_ARCHS
            out_dir = Path(self.build_temp) / "cuda"
            out_dir.mkdir(parents=True, exist_ok=True)
            objects = []
            for source in sources:
                obj = out_dir / (Path(source).stem + (".obj" if sys.platform == "win32" else ".o"))
                cmd = [nvcc, "-c", str(root / source), "-o", str(obj), "-std=c++17", "-O3",
                       "-DSD4M_WITH_CUDA=1", "-I", str(root / "kernels/include"), "-I", str(root / "kernels/src"),
                       *gencode_flags(archs)]
                if sys.platform != "win32":
                    cmd += ["-Xcompiler", "-fPIC"]
                print(" ".join(cmd), flush=True)
                try:
                    subprocess.run(cmd, check=True)
                except (OSError, subprocess.CalledProcessError) as exc:
                    raise CompileError(f"nvcc failed on {source}: {exc}") from exc
                objects.append(str(obj))
            return objects

    return {"ext_modules": ext_modules, "cmdclass": {"build_ext": BuildExt}}


if __name__ == "__main__":  # pragma: no cover - a quick look at what would be built
    print(sysconfig.get_platform(), find_nvcc(), gencode_flags(DEFAULT_CUDA_ARCHS))
