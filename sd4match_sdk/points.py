"""Query points: an ``(N, 2)`` array of ``(x, y)`` pixels of an image, checked before any model runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import PointsError
from .ops.geometry import points_outside

__all__ = ["PointsInput", "check_points"]

#: Query points: an ``(N, 2)`` array-like of ``(x, y)`` pixel coordinates.
PointsInput = Any


def check_points(points: PointsInput, size_wh: tuple[int, int], what: str = "source") -> Tensor:
    """Validate query points against an image of size ``size_wh = (W, H)``.

    Args:
        points: ``(N, 2)`` array-like of ``(x, y)`` pixels (a tensor, an array, nested lists).
        size_wh: the image's ``(W, H)``.
        what: which image the points belong to, for the message.

    Returns:
        ``(N, 2)`` float32 tensor (``(0, 2)`` for no points).

    Raises:
        PointsError: a malformed array, or points that are NaN/inf or outside ``0 <= x < W,
            0 <= y < H`` (the error lists their indices).
    """
    try:
        array = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    except (TypeError, ValueError):
        raise PointsError(f"{what} points must be an (N, 2) array of numbers (x, y)") from None
    if array.size == 0:
        return torch.zeros(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise PointsError(f"{what} points must have shape (N, 2) as (x, y); got {array.shape}")
    # The inside-the-image test runs on the float64 values: x = W - 1e-7 is inside, although it
    # rounds to W in float32 (docs/design.md §13.16). Such points are kept just below W after the cast.
    bad = points_outside(torch.from_numpy(array), size_wh).nonzero().flatten().tolist()
    if bad:
        w, h = size_wh
        shown = ", ".join(f"{i}: ({array[i, 0]:.6g}, {array[i, 1]:.6g})" for i in bad[:5])
        raise PointsError(
            f"{len(bad)} {what} point(s) are NaN/inf or outside the image (0 <= x < {w}, 0 <= y < {h}): "
            f"indices {bad[:20]}{' ...' if len(bad) > 20 else ''} [{shown}]; drop or clamp them",
            indices=bad,
        )
    return _to_float32_inside(array, size_wh)


def _to_float32_inside(array: np.ndarray, size_wh: tuple[int, int]) -> Tensor:
    """float64 points inside ``[0, W) x [0, H)`` as float32, still inside (the largest float32 below W, H)."""
    upper = np.nextafter(np.asarray(size_wh, dtype=np.float32), np.float32(0))
    return torch.from_numpy(np.minimum(array.astype(np.float32), upper))
