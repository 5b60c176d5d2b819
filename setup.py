"""Packaging for sd4match-sdk.

The Python package is pure except for the fused matching kernel (``kernels/``, docs/kernels.md):

* ``sd4match_sdk._kernels``: the CPU kernel, built whenever a C++17 compiler is present.
* ``sd4match_sdk._kernels_cuda``: the CUDA kernel, built when ``nvcc`` is found. It links the CUDA
  runtime statically, so importing the CPU module never needs CUDA libraries.

Environment switches (read at build time):

* ``SD4MATCH_KERNELS=0`` builds no compiled module at all (the SDK then matches with torch).
* ``SD4MATCH_CUDA=auto|1|0``: auto (default) builds the CUDA module when nvcc is found and skips it
  with a warning if it fails to build; 1 requires it; 0 skips it.
* ``SD4MATCH_CUDA_ARCH``: compute capabilities, e.g. ``90`` or ``80;90`` or ``90a`` or ``native``
  (default ``75;80;86;89;90`` plus PTX for the newest).
* ``CUDA_HOME``/``CUDA_PATH``, ``NVCC``: where the toolkit is, when nvcc is not on PATH.
"""

import sys
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).parent / "kernels"))
from build_support import kernel_build_config  # noqa: E402

ROOT = Path(__file__).parent
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
    "numpy>=1.24",
    "pillow>=10",
    "opencv-python>=4.8",
    "scipy>=1.10",
    "tqdm>=4.60",
    "onnx>=1.17",
    "onnxruntime>=1.20",
    "onnxscript>=0.2",  # torch.onnx's exporter (sd4match-export)
]

setup(
    name="sd4match-sdk",
    version=version["__version__"],
    description="SD4Match semantic keypoint matching: Stable Diffusion features, learned prompts, "
    "ONNX/TensorRT engines and a fused matching kernel",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sd4match_sdk", "sd4match_sdk.*"]),
    **kernel_build_config(ROOT),
    package_data={"sd4match_sdk": ["assets/demo/*", "py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest>=8", "tensorboard>=2.14", "onnxscript>=0.2", "pybind11>=2.12", "import-linter>=2.1"],  # pybind11: emulated-CUDA kernel tests compile a module
        "train": ["tensorboard>=2.14"],
        "gpu": ["onnxruntime-gpu>=1.20"],
        "trt": ["tensorrt>=10"],
    },
    entry_points={
        "console_scripts": [
            "sd4match=sd4match_sdk.cli:main",
            "sd4match-export=sd4match_sdk.export.cli:main",
            "sd4match-train=sd4match_sdk.training.cli:main",
            "sd4match-eval=sd4match_sdk.evaluation.cli:main",
        ]
    },
)
