"""Known answers for the training loss (docs/design.md §8.1, §8.2; normalisation order §5.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sd4match_sdk.errors import ShapeError
from sd4match_sdk.ops.geometry import grid_to_normalized
from sd4match_sdk.ops.loss import (
    batch_loss,
    bilinear_sample,
    gaussian_cross_entropy,
    gaussian_label_weights,
    label_offsets,
    label_sigma,
    pair_loss,
)


def w(dx: float, dy: float, sigma: float = 1.5) -> float:
    return math.exp(-(dx * dx + dy * dy) / (2 * sigma**2)) / (2 * math.pi * sigma**2)


class TestGaussianLabel:
    def test_sum_and_centre(self):
        weights = gaussian_label_weights(7)
        assert label_sigma(7) == 1.5
        assert weights.shape == (49,)
        assert float(weights.sum()) == pytest.approx(0.96542, abs=5e-6)  # not renormalised
        assert float(weights[24]) == pytest.approx(0.07074, abs=5e-6)
        assert float(weights.max()) == float(weights[24])

    def test_offsets_row_major(self):
        offsets = label_offsets(7)
        assert offsets[0].tolist() == [-3, -3] and offsets[1].tolist() == [-2, -3] and offsets[24].tolist() == [0, 0]
        assert float(gaussian_label_weights(7)[1]) == pytest.approx(w(-2, -3))


class TestBilinearSample:
    def test_equals_grid_sample_border_align_corners(self):
        torch.manual_seed(0)
        maps = torch.rand(3, 9, 12)
        points = torch.rand(3, 40, 2) * torch.tensor([15.0, 12.0]) - 1.5  # inside and beyond the border
        ref = torch.nn.functional.grid_sample(
            maps[:, None], grid_to_normalized(points, (9, 12))[:, None], mode="bilinear", padding_mode="border",
            align_corners=True,
        )[:, 0, 0]
        torch.testing.assert_close(bilinear_sample(maps, points), ref, rtol=1e-5, atol=1e-6)

    def test_cell_centres_read_one_cell_exactly(self):
        maps = torch.ones(1, 10, 10)
        maps[0, 3, 2] = 1e-30  # a tiny probability next to large ones
        point = torch.tensor([[[2.0, 3.0]]])
        # grid_sample's [-1, 1] round trip blends ~1e-7 of the neighbours in here on torch 2.13 CPU
        # (a log of -16 instead of -69); the loss must read the cell alone.
        assert float(bilinear_sample(maps, point)[0, 0]) == pytest.approx(1e-30, rel=1e-6)


class TestGaussianCrossEntropy:
    def test_uniform_map_interior(self):
        prob = torch.full((1, 10, 10), 0.01)
        loss = gaussian_cross_entropy(prob, torch.tensor([[5.0, 5.0]]))
        total = sum(w(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4))
        assert float(loss[0]) == pytest.approx(total * math.log(100), rel=1e-6)

    def test_taps_outside_the_open_box_are_dropped(self):
        prob = torch.full((2, 10, 10), 0.01)
        loss = gaussian_cross_entropy(prob, torch.tensor([[1.0, 1.0], [0.5, 4.0]]))
        # (1, 1): only 1 + d in (0, 9) survives: d in 0..3 on both axes
        near_corner = sum(w(dx, dy) for dx in range(0, 4) for dy in range(0, 4))
        # (0.5, 4): x taps at -2.5..3.5 -> d_x in 0..3; every y tap (1..7) is inside
        off_grid = sum(w(dx, dy) for dx in range(0, 4) for dy in range(-3, 4))
        assert float(loss[0]) == pytest.approx(near_corner * math.log(100), rel=1e-6)
        assert float(loss[1]) == pytest.approx(off_grid * math.log(100), rel=1e-6)

    def test_shape_errors(self):
        with pytest.raises(ShapeError):
            gaussian_cross_entropy(torch.ones(2, 4, 4), torch.zeros(3, 2))


def one_hot_maps(h=12, w_=12, peak=(6, 5), scale=3.0):
    """Source: every cell is ``scale * e1``; target: ``e1`` at ``peak`` (x, y), ``e2`` elsewhere."""
    source = torch.zeros(2, h, w_)
    source[0] = scale
    target = torch.zeros(2, h, w_)
    target[1] = 1.0
    target[:, peak[1], peak[0]] = torch.tensor([1.0, 0.0])
    return source, target


class TestPairLoss:
    def test_one_hot_similarity_at_the_peak(self):
        source, target = one_hot_maps()
        loss = pair_loss(source, target, torch.tensor([[3.3, 7.7]]), torch.tensor([[6.0, 5.0]]))
        denom = math.exp(25) + 143  # softmax of cos/0.04: exp(1/0.04) at the peak, exp(0) at 143 cells
        p_peak, p_other = math.exp(25) / denom, 1 / denom
        w0 = w(0, 0)
        total = sum(w(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4))
        expected = -(w0 * math.log(p_peak) + (total - w0) * math.log(p_other))
        assert float(loss) == pytest.approx(expected, rel=1e-5)

    def test_one_hot_similarity_off_grid_target(self):
        source, target = one_hot_maps()
        loss = pair_loss(source, target, torch.tensor([[0.0, 0.0]]), torch.tensor([[6.5, 5.0]]))
        denom = math.exp(25) + 143
        p_peak, p_other = math.exp(25) / denom, 1 / denom
        half = (p_peak + p_other) / 2  # taps at x = 6.5 and 5.5 (row 5) blend the peak with a neighbour
        w_half = w(0, 0) + w(-1, 0)
        total = sum(w(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4))
        expected = -(w_half * math.log(half) + (total - w_half) * math.log(p_other))
        assert float(loss) == pytest.approx(expected, rel=1e-5)

    def test_query_sampled_raw_then_normalised(self):
        rng = np.random.default_rng(0)
        source = torch.zeros(2, 2, 2)
        source[:, :, 0] = torch.tensor([10.0, 0.0])[:, None]  # column 0: a long vector along e1
        source[:, :, 1] = torch.tensor([0.0, 1.0])[:, None]  # column 1: a short one along e2
        target = torch.from_numpy(rng.normal(size=(2, 10, 10))).float()
        loss = pair_loss(source, target, torch.tensor([[0.5, 0.0]]), torch.tensor([[5.0, 5.0]]))

        def expected(desc):
            t = target.numpy().reshape(2, -1)
            t = t / (np.linalg.norm(t, axis=0) + 1e-6)
            desc = desc / (np.linalg.norm(desc) + 1e-6)
            logits = desc @ t / 0.04
            logp = (logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())).reshape(10, 10)
            return -sum(w(dx, dy) * logp[5 + dy, 5 + dx] for dx in range(-3, 4) for dy in range(-3, 4))

        raw_first = expected(np.array([5.0, 0.5]))  # bilinear of the raw cells, then normalised
        normalised_first = expected(np.array([0.5, 0.5]))  # the wrong order: normalise cells, then blend
        assert float(loss) == pytest.approx(raw_first, rel=1e-5)
        assert abs(raw_first - normalised_first) > 1e-2

    def test_gradient_reaches_both_maps(self):
        source, target = one_hot_maps()
        source = (source + 0.1 * torch.randn_like(source)).requires_grad_()
        target = (target + 0.1 * torch.randn_like(target)).requires_grad_()
        pair_loss(source, target, torch.tensor([[3.2, 4.1]]), torch.tensor([[6.0, 5.0]])).backward()
        for g in (source.grad, target.grad):
            assert torch.isfinite(g).all() and g.abs().sum() > 0

    def test_rejects_empty_or_mismatched_points(self):
        source, target = one_hot_maps()
        with pytest.raises(ShapeError):
            pair_loss(source, target, torch.zeros(0, 2), torch.zeros(0, 2))
        with pytest.raises(ShapeError):
            pair_loss(source, target, torch.zeros(2, 2), torch.zeros(3, 2))


def test_batch_loss_is_mean_over_pairs_not_keypoints():
    torch.manual_seed(0)
    feats0, feats1 = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 12, 12)
    pts0 = [torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 2.0], [5.5, 6.5], [9.0, 3.0]])]
    pts1 = [torch.tensor([[6.0, 6.0]]), torch.tensor([[2.0, 2.0], [7.0, 5.0], [4.0, 8.5]])]
    l0 = pair_loss(feats0[0], feats1[0], pts0[0], pts1[0])
    l1 = pair_loss(feats0[1], feats1[1], pts0[1], pts1[1])
    loss = batch_loss(feats0, feats1, pts0, pts1)
    assert float(loss) == pytest.approx(float((l0 + l1) / 2), rel=1e-6)
    assert float(loss) != pytest.approx(float((1 * l0 + 3 * l1) / 4), rel=1e-3)  # not keypoint-weighted
    with pytest.raises(ShapeError):
        batch_loss(feats0, feats1, pts0[:1], pts1)
