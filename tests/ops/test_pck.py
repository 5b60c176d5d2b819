"""Known answers for PCK (docs/design.md §9): per-pair fractions, mean over pairs, per-category means."""

from __future__ import annotations

import numpy as np
import pytest

from sd4match_sdk.errors import ShapeError
from sd4match_sdk.evaluation.report import format_table
from sd4match_sdk.ops.pck import PCKAccumulator, pair_pck, summarize_pck


def shifted(gt: np.ndarray, distances: list[float]) -> np.ndarray:
    """Predictions at exactly the given distances from ``gt`` (axis-aligned, alternating directions)."""
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    return gt + directions[np.arange(len(distances)) % 4] * np.asarray(distances, dtype=np.float64)[:, None]


def test_pair_pck_boundary_is_inclusive():
    gt = np.array([[100.0, 100.0], [200.0, 50.0], [10.0, 300.0], [400.0, 400.0], [5.0, 5.0]])
    pred = shifted(gt, [0.0, 4.9, 5.0, 5.1, 20.0])
    scores = pair_pck(pred, gt, threshold=50.0, alphas=(0.05, 0.1, 0.15))
    # limits 2.5, 5.0 and 7.5: distance 5.0 counts at alpha 0.1 (<=)
    np.testing.assert_allclose(scores, [1 / 5, 3 / 5, 4 / 5])


def test_pair_pck_shapes():
    with pytest.raises(ShapeError):
        pair_pck(np.zeros((3, 2)), np.zeros((2, 2)), 10.0)
    with pytest.raises(ShapeError):
        pair_pck(np.zeros((0, 2)), np.zeros((0, 2)), 10.0)


def test_all_is_the_mean_over_pairs_not_over_categories_or_keypoints():
    acc = PCKAccumulator(alphas=(0.1,))
    gt1 = np.zeros((1, 2))
    gt4 = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    # cat: two pairs of 1 keypoint, both right -> 1.0, 1.0
    acc.add(shifted(gt1, [1.0]), gt1, 100.0, "cat")
    acc.add(shifted(gt1, [0.0]), gt1, 100.0, "cat")
    # dog: four pairs of 4 keypoints: 0, 0, 1/4 and 1/4 right
    for distances in ([50, 50, 50, 50], [11, 12, 13, 14], [0, 50, 50, 50], [50, 9, 50, 50]):
        acc.add(shifted(gt4, distances), gt4, 100.0, "dog")
    summary = acc.summary()
    assert summary.num_pairs == 6 and summary.counts == {"cat": 2, "dog": 4}
    assert summary.per_category[0.1] == {"cat": 1.0, "dog": 0.125}
    assert summary.overall[0.1] == pytest.approx((1 + 1 + 0 + 0 + 0.25 + 0.25) / 6)  # 0.41667
    assert summary.overall[0.1] != pytest.approx((1.0 + 0.125) / 2)  # not the mean of categories
    assert summary.overall[0.1] != pytest.approx((2 + 2) / (2 + 16))  # not pooled over keypoints


def test_summary_json_and_table():
    fractions = np.array([[0.5, 1.0], [0.0, 0.5], [1.0, 1.0]])
    summary = summarize_pck(fractions, ["aeroplane", "tvmonitor", "aeroplane"], alphas=(0.05, 0.1))
    payload = summary.to_dict()
    assert payload["pck"]["0.1"] == {"all": pytest.approx(2.5 / 3), "per_category": {"aeroplane": 1.0, "tvmonitor": 0.5}}
    assert payload["pck"]["0.05"]["per_category"]["aeroplane"] == 0.75
    table = format_table(summary, title="demo")
    lines = table.splitlines()
    assert lines[0] == "demo"
    assert lines[1].split() == ["aero", "tv", "All"]
    assert lines[2].split() == ["PCK@0.05", "75.0", "0.0", "50.0"]
    assert lines[3].split() == ["PCK@0.1", "100.0", "50.0", "83.3"]
    assert lines[4].split() == ["pairs", "2", "1", "3"]
