"""Coordinate maps between original pixels, the 768 frame and the 48x48 grid (docs/design.md §6)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk.ops.geometry import (
    frame_to_grid,
    frame_to_pixels,
    grid_to_frame,
    grid_to_normalized,
    pixels_to_frame,
    points_outside,
)


@pytest.mark.parametrize("size_wh", [(640, 480), (451, 300), (300, 1001), (768, 768)])
def test_round_trip_non_square(size_wh: tuple[int, int]) -> None:
    torch.manual_seed(0)
    w, h = size_wh
    pts = torch.rand(50, 2) * torch.tensor([w - 1.0, h - 1.0])
    grid = frame_to_grid(pixels_to_frame(pts, size_wh, 768), 768, (48, 48))
    back = frame_to_pixels(grid_to_frame(grid, 768, (48, 48)), size_wh, 768)
    torch.testing.assert_close(back, pts, atol=1e-4, rtol=1e-6)


def test_known_values() -> None:
    pts = torch.tensor([[320.0, 240.0], [0.0, 0.0], [639.0, 479.0]])
    frame = pixels_to_frame(pts, (640, 480), 768)
    torch.testing.assert_close(frame, torch.tensor([[384.0, 384.0], [0.0, 0.0], [766.8, 766.4]]))
    grid = frame_to_grid(frame, 768, (48, 48))
    torch.testing.assert_close(grid[0], torch.tensor([384 * 47 / 767, 384 * 47 / 767]))
    # The last frame pixel (767) is the last cell centre (47): align corners.
    torch.testing.assert_close(frame_to_grid(torch.tensor([[767.0, 0.0]]), 768, (48, 48)), torch.tensor([[47.0, 0.0]]))
    torch.testing.assert_close(grid_to_normalized(torch.tensor([[0.0, 47.0]]), (48, 48)), torch.tensor([[-1.0, 1.0]]))


def test_points_outside() -> None:
    pts = torch.tensor([[0, 0], [9.99, 4.99], [10, 2], [-0.01, 1], [3, float("nan")], [float("inf"), 1]])
    assert points_outside(pts, (10, 5)).tolist() == [False, False, True, True, True, True]
