"""Reading images and turning them into model inputs.

The SD input follows the official pair datasets (docs/design.md §2.1): PIL bilinear resize (antialiased) of the
uint8 image to ``size x size`` without keeping the aspect ratio, then ``[0, 1] -> [-1, 1]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import ImageError

__all__ = ["ImageInput", "load_image", "read_image_file", "sd_pixels"]

#: What the public API accepts as an image: a path, a PIL image, or an ``HxWx3`` uint8 RGB array
#: (``HxW`` grayscale and ``HxWx4`` RGBA arrays are converted).
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageInput) -> np.ndarray:
    """Read an image into an ``(H, W, 3)`` uint8 RGB array.

    Args:
        image: a file path, a PIL image (any mode), or a uint8 array of shape ``(H, W)``,
            ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA; alpha is dropped).

    Raises:
        ImageError: the file does not exist or cannot be decoded, or the array has an
            unsupported type, dtype or shape.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, Tensor):
        raise ImageError(
            "torch tensors are not accepted as images; pass an (H, W, 3) uint8 RGB numpy array, "
            "e.g. tensor.permute(1, 2, 0).mul(255).byte().numpy()"
        )
    raise ImageError(
        f"unsupported image type {type(image).__name__}; pass a file path, a PIL image or an "
        "(H, W, 3) uint8 RGB numpy array"
    )


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into ``(H, W, 3)`` uint8 RGB (PIL ``convert("RGB")``, as the official loaders).

    Raises:
        ImageError: the file does not exist or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {str(path)!r}; check the path")
    try:
        with Image.open(path) as pil:
            pil.load()
            return np.asarray(pil.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"cannot decode image {str(path)!r} ({err}); use a PNG or JPEG file") from None


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(
            f"image arrays must be uint8 (got {array.dtype}); for floats in [0, 1] pass "
            "(array * 255).round().astype(np.uint8)"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"image array has shape {array.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ImageError(f"image array {array.shape} is too small; need at least 2x2 pixels")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def sd_pixels(image: np.ndarray, size: int) -> Tensor:
    """Resize an RGB uint8 image to ``size x size`` and scale it to ``[-1, 1]``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        size: side of the square model frame (768).

    Returns:
        ``(1, 3, size, size)`` float32 tensor in ``[-1, 1]``.
    """
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
    return (pixels.permute(2, 0, 1)[None] - 0.5) / 0.5
