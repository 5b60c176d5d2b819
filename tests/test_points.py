"""Query points are checked on their float64 values, before the float32 cast (docs/design.md §13.16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sd4match_sdk import PointsError
from sd4match_sdk.points import check_points


@pytest.mark.parametrize("w, h", [(640, 480), (333, 500), (4000, 3000)])
def test_just_inside_the_image_is_accepted_and_stays_inside(w, h):
    x, y = w - 1e-7, h - 1e-9  # inside in float64, although they round to W, H in float32
    assert np.float32(x) == w
    pts = check_points([[x, y], [0.0, 0.0]], (w, h))
    assert pts.dtype == torch.float32
    assert float(pts[0, 0]) < w and float(pts[0, 1]) < h
    assert float(pts[0, 0]) == pytest.approx(w, abs=1e-3) and pts[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "point, index",
    [([640.0, 10.0], 1), ([10.0, 480.0], 1), ([-1e-12, 10.0], 1), ([np.nan, 1.0], 1), ([1.0, np.inf], 1)],
)
def test_outside_is_refused_with_its_index_and_the_fix(point, index):
    with pytest.raises(PointsError, match=rf"outside the image \(0 <= x < 640, 0 <= y < 480\): indices \[{index}\].*drop or clamp them") as info:
        check_points([[5.0, 5.0], point], (640, 480))
    assert info.value.indices == [index]


def test_values_inside_keep_their_float32_rounding():
    points = np.array([[12.3456789, 400.1], [639.5, 479.99]])
    np.testing.assert_array_equal(check_points(points, (640, 480)).numpy(), points.astype(np.float32))
