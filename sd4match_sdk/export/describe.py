"""What an export writes into the manifest for readers: tensor, preprocessing and library descriptions.

They document the engine for programs without the SDK (the C++ consumer, docs/cpp.md): every
graph tensor's layout and range, how images, noise and coordinates are prepared, and the
library versions that shaped the files.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from ..engine.format import DINO_PROCESSOR_DIR

__all__ = ["TENSOR_DESCRIPTIONS", "library_versions", "preprocessing_description"]

#: Manifest descriptions of every graph tensor: layout, dtype, value range.
TENSOR_DESCRIPTIONS = {
    "pixels": "NCHW RGB float32 in [-1, 1]: the uint8 image resized to image_size x image_size with "
    "PIL bilinear (antialiased, aspect ratio not kept), then (x / 255 - 0.5) / 0.5",
    "eps_vae": "standard normal float32 draw for the VAE posterior sample, one (4, S/8, S/8) map per image",
    "latents": "VAE posterior sample times scaling_factor: (mean + std * eps_vae) * scaling_factor",
    "noise": "standard normal float32 diffusion noise, E maps per image (image-major: [image, member, 4, S/8, S/8])",
    "class_index": "int64 index of each image's category in the manifest's 'categories' list",
    "context": "float32 cross-attention context per image (B, 77, D): a pair's prompt_net output, "
    "repeated for its source and its target image",
    "features": "raw ensemble-mean up_blocks[1] feature map, float32; SD4Match samples query descriptors "
    "from THIS map and L2-normalises after sampling (docs/design.md §5.1)",
    "features_normalized": "features / (||features||_2 over channels + 1e-6) per cell, float32: the target "
    "side of the cosine map (dense matching)",
    "dino_source": "DINOv2 input of each pair's source image (float32): the ORIGINAL image, shortest edge "
    "resized to 256 (bicubic), centre crop 224, x / 255, ImageNet mean/std normalisation",
    "dino_target": "same as dino_source for each pair's target image",
}


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Versions of Python and the libraries that shape the exported files."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions.update(extra or {})
    return versions


def preprocessing_description(image_size: int, dino_processor: Any = None) -> dict[str, Any]:
    """How the SDK turns an image, noise and points into graph inputs and back, for C++ callers:
    the manifest's ``preprocessing`` section."""
    size = image_size
    info: dict[str, Any] = {
        "sd_image": {
            "input": "uint8 RGB image of any size (grayscale/RGBA converted to RGB)",
            "resize": [size, size],
            "interpolation": "PIL Image.BILINEAR on the uint8 image (antialiased); aspect ratio not kept",
            "scale": "(x / 255 - 0.5) / 0.5 -> [-1, 1]",
            "layout": "NCHW float32",
        },
        "noise": {
            "distribution": "standard normal, float32",
            "order": "per image: eps_vae (1, 4, S/8, S/8) then noise (E, 4, S/8, S/8); for a pair, the source "
            "image draws first, then the target (one torch.Generator in the Python SDK)",
        },
        "coordinates": {
            "to_frame": "x_frame = x * S / W, y_frame = y * S / H (original pixels -> S x S frame)",
            "to_grid": "x_grid = x_frame * (G - 1) / (S - 1), G = S / 16 (align corners)",
            "from_grid": "x_frame = x_grid * (S - 1) / (G - 1); x = x_frame * W / S",
        },
        "matching": {
            "query": "bilinear sample (align corners, zero padding) of 'features' at the query, then L2-normalise",
            "target": "'features_normalized' (per-cell L2 normalised map)",
            "kernel_soft_argmax": {"sigma_cells": 7.0, "beta": 0.04},
        },
    }
    if dino_processor is not None:
        info["dino_image"] = {
            "input": "the ORIGINAL uint8 RGB image (not the S x S frame)",
            "shortest_edge": dino_processor.size.get("shortest_edge"),
            "interpolation": "bicubic (PIL)",
            "center_crop": [dino_processor.crop_size["height"], dino_processor.crop_size["width"]],
            "rescale_factor": float(dino_processor.rescale_factor),
            "mean": list(map(float, dino_processor.image_mean)),
            "std": list(map(float, dino_processor.image_std)),
            "layout": "NCHW float32",
            "processor_config": f"{DINO_PROCESSOR_DIR}/preprocessor_config.json",
        }
    return info
