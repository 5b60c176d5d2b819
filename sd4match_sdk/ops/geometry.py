"""Coordinate maps between an original image, the square model frame and the feature grid.

Conventions (docs/design.md §6; the public API speaks original pixels, §13.5). Points are ``(x, y)`` in the last dimension.

* original pixels -> frame: the image is resized anisotropically to ``frame x frame``, so
  ``x_f = x * frame / W`` and ``y_f = y * frame / H`` (as the official datasets scale keypoints).
* frame -> grid: align-corners scaling, ``x_g = x_f * (w - 1) / (frame - 1)`` (47/767 at 768 px).
* grid -> [-1, 1] for ``grid_sample(align_corners=True)``: ``u = x_g / (w - 1) * 2 - 1``.
* the official pair loaders' conventions in the frame: a mirrored pair maps ``x -> frame - x``
  (``frame``, not ``frame - 1``), and keypoints are clamped into ``[1e-4, frame - 1 - 1e-4]``.

The scaling maps take torch tensors or numpy arrays (the dataset loaders work in float64 numpy)
and return the same type.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CLAMP_EPS",
    "pixels_to_frame",
    "frame_to_pixels",
    "frame_to_grid",
    "grid_to_frame",
    "grid_to_normalized",
    "mirror_in_frame",
    "clamp_to_frame",
    "points_outside",
]

#: Offset of the official ``regularise_coordinates(..., eps=1e-4)``.
CLAMP_EPS = 1e-4

Points = TypeVar("Points", Tensor, np.ndarray)


def _scale(points: Points, sx: float, sy: float) -> Points:
    if isinstance(points, np.ndarray):
        return points * np.array([sx, sy])
    return points * points.new_tensor([sx, sy])


def pixels_to_frame(points: Points, size_wh: tuple[int, int], frame: int = 768) -> Points:
    """Original-image pixels to the ``frame x frame`` model frame.

    Args:
        points: ``(*, 2)`` pixel coordinates ``(x, y)`` of an image of size ``size_wh``.
        size_wh: ``(W, H)`` of the original image.
        frame: side of the square model frame.

    Returns:
        ``(*, 2)`` coordinates in the model frame.
    """
    w, h = size_wh
    return _scale(points, frame / w, frame / h)


def frame_to_pixels(points: Points, size_wh: tuple[int, int], frame: int = 768) -> Points:
    """Inverse of :func:`pixels_to_frame`."""
    w, h = size_wh
    return _scale(points, w / frame, h / frame)


def frame_to_grid(points: Points, frame: int, grid_hw: tuple[int, int]) -> Points:
    """Model frame to feature-grid cells, align-corners (``x * (w-1) / (frame-1)``).

    Args:
        points: ``(*, 2)`` frame coordinates.
        frame: side of the model frame (768).
        grid_hw: ``(h, w)`` of the feature grid (48, 48).
    """
    h, w = grid_hw
    return _scale(points, (w - 1) / (frame - 1), (h - 1) / (frame - 1))


def grid_to_frame(points: Points, frame: int, grid_hw: tuple[int, int]) -> Points:
    """Inverse of :func:`frame_to_grid` (``x * (frame-1) / (w-1)``, 767/47 at 768 px)."""
    h, w = grid_hw
    return _scale(points, (frame - 1) / (w - 1), (frame - 1) / (h - 1))


def grid_to_normalized(points: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """Grid cells to ``[-1, 1]`` for ``grid_sample(align_corners=True)``."""
    h, w = grid_hw
    return _scale(points, 2.0 / (w - 1), 2.0 / (h - 1)) - 1.0


def mirror_in_frame(points: np.ndarray, frame: int) -> np.ndarray:
    """Mirror frame keypoints horizontally, ``x' = frame - x`` (the official PF-Pascal flip rule).

    Args:
        points: ``(N, 2)`` frame coordinates.

    Returns:
        ``(N, 2)`` float64 copy.
    """
    out = np.array(points, np.float64, copy=True)
    out[:, 0] = frame - out[:, 0]
    return out


def clamp_to_frame(points: np.ndarray, frame: int, eps: float = CLAMP_EPS) -> np.ndarray:
    """Push coordinates ``<= 0`` to ``eps`` and ``>= frame - 1`` to ``frame - 1 - eps``
    (the official ``regularise_coordinates``).

    Args:
        points: ``(N, 2)`` frame coordinates.

    Returns:
        ``(N, 2)`` float64 copy.
    """
    out = np.array(points, np.float64, copy=True)
    out[out <= 0] = eps
    out[out >= frame - 1] = frame - 1 - eps
    return out


def points_outside(points: Tensor, size_wh: tuple[int, int]) -> Tensor:
    """Mask of points that are non-finite or outside ``0 <= x < W, 0 <= y < H``.

    Args:
        points: ``(N, 2)`` pixel coordinates.
        size_wh: ``(W, H)``.

    Returns:
        ``(N,)`` bool, True where the point is invalid.
    """
    w, h = size_wh
    x, y = points[..., 0], points[..., 1]
    finite = torch.isfinite(x) & torch.isfinite(y)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return ~(finite & inside)
