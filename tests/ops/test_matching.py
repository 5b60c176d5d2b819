"""Known-answer tests of the pure matching functions (docs/design.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sd4match_sdk.config import MatchConfig
from sd4match_sdk.ops.matching import (
    grid_coordinates,
    kernel_soft_argmax,
    l2_normalize,
    match_points,
    nearest_neighbour,
    sample_descriptors,
    similarity_map,
    soft_argmax,
)


def _numpy_kernel_soft_argmax(sim: np.ndarray, sigma: float, beta: float) -> tuple[np.ndarray, float]:
    """Straight transcription of docs/design.md §5.3 for one (H, W) map, in float64."""
    h, w = sim.shape
    my, mx = np.unravel_index(np.argmax(sim), sim.shape)
    ys, xs = np.mgrid[0:h, 0:w]
    g = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * sigma**2))
    s = sim * g / beta
    p = np.exp(s - s.max())
    p /= p.sum()
    return np.array([(p * xs).sum(), (p * ys).sum()]), p.max()


class TestKernelSoftArgmax:
    def test_single_peak_known_answer(self) -> None:
        sim = torch.zeros(1, 1, 48, 48)
        sim[0, 0, 5, 10] = 1.0  # row 5, column 10 -> (x, y) = (10, 5)
        coords, score = kernel_soft_argmax(sim, sigma=7, beta=0.04)
        # Every other cell has S' = 0: P_peak = e^25 / (e^25 + 2303), the rest share the remainder.
        p_peak = np.exp(25.0) / (np.exp(25.0) + 2303)
        xs, ys = np.meshgrid(np.arange(48.0), np.arange(48.0))
        rest = (1 - p_peak) / 2303
        ex = p_peak * 10 + rest * (xs.sum() - 10)
        ey = p_peak * 5 + rest * (ys.sum() - 5)
        torch.testing.assert_close(coords[0, 0].double(), torch.tensor([ex, ey]), atol=1e-5, rtol=0)
        assert score.item() == pytest.approx(p_peak, abs=1e-6)

    def test_gaussian_suppresses_distant_rival(self) -> None:
        sim = torch.full((1, 1, 48, 48), -0.2)
        sim[0, 0, 5, 10] = 1.0
        sim[0, 0, 40, 40] = 0.99  # nearly as good, 46 cells away
        coords, _ = kernel_soft_argmax(sim, sigma=7, beta=0.04)
        plain, _ = soft_argmax(sim, beta=0.04)
        expected, _ = _numpy_kernel_soft_argmax(sim[0, 0].double().numpy(), 7, 0.04)
        np.testing.assert_allclose(coords[0, 0].numpy(), expected, atol=1e-4)
        assert abs(coords[0, 0, 0].item() - 10) < 0.05 and abs(coords[0, 0, 1].item() - 5) < 0.05
        assert plain[0, 0, 0].item() > 20  # without the kernel the rival drags the mean away

    def test_random_maps_match_transcription(self) -> None:
        torch.manual_seed(0)
        sim = torch.rand(2, 3, 12, 17) * 2 - 1
        coords, scores = kernel_soft_argmax(sim, sigma=3, beta=0.1)
        for b in range(2):
            for n in range(3):
                exp, peak = _numpy_kernel_soft_argmax(sim[b, n].double().numpy(), 3, 0.1)
                np.testing.assert_allclose(coords[b, n].numpy(), exp, atol=1e-4)
                assert scores[b, n].item() == pytest.approx(peak, rel=1e-4)

    def test_empty_queries(self) -> None:
        coords, scores = kernel_soft_argmax(torch.zeros(2, 0, 8, 8))
        assert coords.shape == (2, 0, 2) and scores.shape == (2, 0)


class TestNearestNeighbour:
    def test_argmax_cell_and_cosine(self) -> None:
        sim = torch.zeros(1, 2, 6, 9)
        sim[0, 0, 4, 7] = 0.9
        sim[0, 1, 0, 2] = 0.5
        coords, best = nearest_neighbour(sim)
        assert coords[0].tolist() == [[7.0, 4.0], [2.0, 0.0]]
        torch.testing.assert_close(best[0], torch.tensor([0.9, 0.5]))


class TestSampling:
    def test_bilinear_align_corners(self) -> None:
        feat = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
        pts = torch.tensor([[[1.25, 2.5], [0.0, 0.0], [4.0, 3.0]]])
        desc = sample_descriptors(feat, pts)
        f = feat[0]

        def bilinear(c: int, x: float, y: float) -> float:
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            x1, y1 = min(x0 + 1, 4), min(y0 + 1, 3)
            ax, ay = x - x0, y - y0
            return float(
                (1 - ax) * (1 - ay) * f[c, y0, x0] + ax * (1 - ay) * f[c, y0, x1]
                + (1 - ax) * ay * f[c, y1, x0] + ax * ay * f[c, y1, x1]
            )

        for n, (x, y) in enumerate(pts[0].tolist()):
            for c in range(2):
                assert desc[0, n, c].item() == pytest.approx(bilinear(c, x, y), abs=1e-5)

    def test_grid_coordinates_row_major(self) -> None:
        g = grid_coordinates(2, 3)
        assert g.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


class TestNormalisationOrder:
    """docs/design.md §5.1: sample from the raw map, then normalise; the target is normalised per cell."""

    def test_sample_then_normalise(self) -> None:
        torch.manual_seed(1)
        feat0 = torch.randn(1, 8, 6, 6) * torch.linspace(0.1, 10, 36).reshape(1, 1, 6, 6)  # very uneven norms
        feat1 = torch.randn(1, 8, 5, 7)
        pts = torch.tensor([[[2.5, 3.5]]])
        sim = similarity_map(feat0, feat1, pts)
        desc = l2_normalize(sample_descriptors(feat0, pts), -1)
        expected = torch.einsum("bnc,bchw->bnhw", desc, l2_normalize(feat1, 1))
        torch.testing.assert_close(sim, expected)
        # Normalising the source map per cell first gives a different descriptor (the test can fail).
        wrong = l2_normalize(sample_descriptors(l2_normalize(feat0, 1), pts), -1)
        assert (wrong - desc).abs().max() > 1e-2

    def test_match_points_dispatch(self) -> None:
        torch.manual_seed(2)
        feat0, feat1 = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
        pts = torch.tensor([[[3.0, 4.0], [0.5, 7.0]]])
        sim = similarity_map(feat0, feat1, pts)
        for method, fn in (("kernel_softargmax", lambda s: kernel_soft_argmax(s, 7, 0.04)),
                           ("softargmax", lambda s: soft_argmax(s, 0.04)), ("nn", nearest_neighbour)):
            got = match_points(feat0, feat1, pts, MatchConfig(method=method))
            want = fn(sim)
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])

    def test_identical_maps_find_query_cell(self) -> None:
        torch.manual_seed(3)
        feat = torch.randn(1, 32, 9, 11)
        pts = torch.tensor([[[4.0, 2.0], [10.0, 8.0], [0.0, 0.0]]])
        coords, best = match_points(feat, feat, pts, MatchConfig(method="nn"))
        assert coords[0].tolist() == pts[0].tolist()
        torch.testing.assert_close(best, torch.ones_like(best), atol=1e-5, rtol=0)


def test_zero_padding_outside_matches_grid_sample() -> None:
    feat = torch.randn(1, 3, 4, 4)
    pts = torch.tensor([[[3.5, 1.0]]])  # half a cell past the right border
    grid = torch.tensor([[[[3.5 / 3 * 2 - 1, 1.0 / 3 * 2 - 1]]]])
    ref = F.grid_sample(feat, grid, align_corners=True, padding_mode="zeros")[0, :, 0, 0]
    torch.testing.assert_close(sample_descriptors(feat, pts)[0, 0], ref)
