"""Packaging for sd4match-sdk.

The Python package is pure; the optional compiled kernel (``sd4match_sdk._kernels``) is added
by the kernel build (see kernels/ and README "Fused kernel").
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version: dict = {}
exec((ROOT / "sd4match_sdk" / "_version.py").read_text(), version)

# Ranges we test with (see README "Versions"). torch is installed first from the CPU build
# (`pip install torch==2.13.0`); a range it satisfies makes pip keep it.
INSTALL_REQUIRES = [
    "torch>=2.4,<2.15",
    "diffusers>=0.35,<0.43",
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
    package_data={"sd4match_sdk": ["assets/demo/*", "py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest>=8", "tensorboard>=2.14", "onnxscript>=0.2"],
        "train": ["tensorboard>=2.14"],
        "gpu": ["onnxruntime-gpu>=1.20"],
        "trt": ["tensorrt>=10"],
    },
    entry_points={
        "console_scripts": [
            "sd4match=sd4match_sdk.cli:main",
        ]
    },
)
