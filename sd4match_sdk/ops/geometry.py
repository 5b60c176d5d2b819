"""Coordinate maps between an original image, the square model frame and the feature grid.

Conventions (SPEC 4 and 13). Points are ``(x, y)`` in the last dimension.

* original pixels -> frame: the image is resized anisotropically to ``frame x frame``, so
  ``x_f = x * frame / W`` and ``y_f = y * frame / H`` (as the official datasets scale keypoints).
* frame -> grid: align-corners scaling, ``x_g = x_f * (w - 1) / (frame - 1)`` (47/767 at 768 px).
* grid -> [-1, 1] for ``grid_sample(align_corners=True)``: ``u = x_g / (w - 1) * 2 - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "pixels_to_frame",
    "frame_to_pixels",
    "frame_to_grid",
    "grid_to_frame",
    "grid_to_normalized",
    "points_outside",
]


def _scale(points: Tensor, sx: float, sy: float) -> Tensor:
    scale = points.new_tensor([sx, sy])
    return points * scale


def pixels_to_frame(points: Tensor, size_wh: tuple[int, int], frame: int = 768) -> Tensor:
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


def frame_to_pixels(points: Tensor, size_wh: tuple[int, int], frame: int = 768) -> Tensor:
    """Inverse of :func:`pixels_to_frame`."""
    w, h = size_wh
    return _scale(points, w / frame, h / frame)


def frame_to_grid(points: Tensor, frame: int, grid_hw: tuple[int, int]) -> Tensor:
    """Model frame to feature-grid cells, align-corners (``x * (w-1) / (frame-1)``).

    Args:
        points: ``(*, 2)`` frame coordinates.
        frame: side of the model frame (768).
        grid_hw: ``(h, w)`` of the feature grid (48, 48).
    """
    h, w = grid_hw
    return _scale(points, (w - 1) / (frame - 1), (h - 1) / (frame - 1))


def grid_to_frame(points: Tensor, frame: int, grid_hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`frame_to_grid` (``x * (frame-1) / (w-1)``, 767/47 at 768 px)."""
    h, w = grid_hw
    return _scale(points, (frame - 1) / (w - 1), (frame - 1) / (h - 1))


def grid_to_normalized(points: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """Grid cells to ``[-1, 1]`` for ``grid_sample(align_corners=True)``."""
    h, w = grid_hw
    return _scale(points, 2.0 / (w - 1), 2.0 / (h - 1)) - 1.0


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
