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

__all__ = ["ImageInput", "load_image", "pil_to_rgb", "read_image_file", "sd_pixels"]

#: What the public API accepts as an image: a path, a PIL image, or an ``HxWx3`` uint8 RGB array
#: (``HxW`` grayscale and ``HxWx4`` RGBA arrays are converted).
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageInput) -> np.ndarray:
    """Read an image into an ``(H, W, 3)`` uint8 RGB array.

    Args:
        image: a file path, a PIL image (any mode; see :func:`pil_to_rgb`), or a uint8 array of
            shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA; alpha is
            dropped). Every image must be at least 2 x 2 pixels.

    Raises:
        ImageError: the file does not exist or cannot be decoded, the image is too small, or the
            array has an unsupported type, dtype or shape.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
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
    """Decode an image file into ``(H, W, 3)`` uint8 RGB (PIL ``convert("RGB")``, as the official
    loaders; 16-bit and float images are scaled, see :func:`pil_to_rgb`).

    Raises:
        ImageError: the file does not exist, cannot be decoded, is larger than PIL's
            decompression-bomb limit, or is smaller than 2 x 2 pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {str(path)!r}; check the path")
    try:
        with Image.open(path) as pil:
            pil.load()
            return pil_to_rgb(pil, repr(str(path)))
    except Image.DecompressionBombError as err:
        raise ImageError(
            f"image {str(path)!r} is too large to decode safely ({err}); downscale it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as err:
        raise ImageError(f"cannot decode image {str(path)!r} ({err}); use a PNG or JPEG file") from None


def pil_to_rgb(pil: Image.Image, what: str = "the image") -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a PIL image of any mode (docs/design.md §13.16).

    8-bit modes go through ``convert("RGB")`` (as the official loaders). PIL would *clip* wider
    modes to 0..255, so they are scaled instead: 16-bit grayscale (``I;16*``, and ``I`` holding
    values in 0..65535) keeps its high byte (``v >> 8``, what PIL does for 16-bit RGB PNGs), and
    float images (``F``) in ``[0, 1]`` are multiplied by 255 and rounded.

    Raises:
        ImageError: a 32-bit integer image outside 0..65535, a float image outside ``[0, 1]``, a
            mode PIL cannot convert to RGB, or fewer than 2 x 2 pixels.
    """
    mode = pil.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _wide_gray_to_uint8(np.asarray(pil), mode, what)
        return _check_size(np.repeat(gray[:, :, None], 3, axis=2), what)
    try:
        rgb = np.asarray(pil.convert("RGB"))
    except (ValueError, OSError) as err:
        raise ImageError(f"cannot convert {what} (mode {mode}) to RGB ({err}); save it as an 8-bit RGB PNG or JPEG") from None
    return _check_size(rgb, what)


def _wide_gray_to_uint8(array: np.ndarray, mode: str, what: str) -> np.ndarray:
    """16/32-bit integer or float grayscale -> uint8, scaled (never clipped)."""
    if mode == "F":
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            low, high = (float(np.nanmin(array)), float(np.nanmax(array))) if np.isfinite(array).any() else (np.nan, np.nan)
            raise ImageError(
                f"{what} is a float image with values in [{low:.6g}, {high:.6g}] (or NaN/inf); float images must lie "
                "in [0, 1]: scale it to [0, 1] or save it as an 8-bit or 16-bit PNG"
            )
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)
    wide = array.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise ImageError(
            f"{what} is a 32-bit integer image with values in [{wide.min()}, {wide.max()}]; only 0..65535 (16-bit) "
            "is understood: save it as an 8-bit or 16-bit PNG"
        )
    return (wide >> 8).astype(np.uint8)


def _check_size(rgb: np.ndarray, what: str) -> np.ndarray:
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ImageError(f"{what} is {rgb.shape[1]} x {rgb.shape[0]} pixels, too small; need at least 2 x 2 pixels")
    return rgb


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
