"""Inputs, reference answers and comparisons shared by the kernel tests (CPU, CUDA, emulated CUDA).

The oracle is the torch reference :func:`sd4match_sdk.ops.matching.match_points`. Two kinds of
feature maps are used:

* ``random``: i.i.d. normal features; the softmax is spread over many cells, which exercises the
  sums, but the float32 reference itself drifts from the exact answer as grids grow (about 3e-4
  cells at 48x48 against a float64 computation), so random maps stay small here.
* ``smooth``: low-frequency random source maps and a target that is the source resampled under an
  affine map plus noise, as real features behave: one clear, a few cells wide peak per query
  (``covered_points`` lie where the map has a true match; queries elsewhere get flat softmaxes).

A query whose two best cells differ by less than ``NEAR_TIE`` in cosine may pick either as its
argmax under any change of summation order, and the Gaussian then moves; such queries are left
out of the comparison (``decisive``), and a test fails if that leaves fewer than 90% of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sd4match_sdk.config import MatchConfig
from sd4match_sdk.ops.matching import grid_coordinates, l2_normalize, match_points, sample_descriptors, similarity_map

NEAR_TIE = 1e-5
FP32_TOL = 1e-4  # grid cells
FP16_TOL = 1e-2


def random_maps(b: int, c: int, hw0: tuple[int, int], hw1: tuple[int, int], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, *hw0, generator=g), torch.randn(b, c, *hw1, generator=g)


def smooth_maps(b: int, c: int, hw0: tuple[int, int], hw1: tuple[int, int], seed: int) -> tuple[Tensor, Tensor]:
    """Source: upsampled coarse noise (+ fine noise); target: the source under an affine map."""
    g = torch.Generator().manual_seed(seed)
    h0, w0 = hw0
    h1, w1 = hw1
    coarse = torch.randn(b, c, max(2, h0 // 3), max(2, w0 // 3), generator=g)
    source = F.interpolate(coarse, size=(h0, w0), mode="bilinear", align_corners=True)
    source = source + 0.3 * torch.randn(b, c, h0, w0, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h1), torch.linspace(-1, 1, w1), indexing="ij")
    grid = torch.stack([0.85 * xs + 0.07, 0.8 * ys - 0.05], dim=-1)[None].expand(b, -1, -1, -1)
    target = F.grid_sample(source, grid, mode="bilinear", align_corners=True)
    target = target + 0.2 * torch.randn(b, c, h1, w1, generator=g)
    return source, target


def query_points(b: int, n: int, hw0: tuple[int, int], seed: int) -> Tensor:
    """``(b, n, 2)`` points on the source grid: the four corners, edge points, then random ones."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw0
    special = torch.tensor(
        [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, 0], [w - 1, (h - 1) / 3], [0.25, h - 1]],
        dtype=torch.float32,
    )
    pts = torch.rand(b, n, 2, generator=g) * torch.tensor([w - 1, h - 1], dtype=torch.float32)
    k = min(n, len(special))
    pts[:, :k] = special[:k]
    return pts


def covered_points(b: int, n: int, hw0: tuple[int, int], seed: int) -> Tensor:
    """Random source points inside the part of the source that ``smooth_maps``' target shows."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw0
    u = torch.rand(b, n, 2, generator=g) * 1.4 - 0.7  # normalised; the target covers about [-0.78, 0.85]
    return (u + 1) / 2 * torch.tensor([w - 1, h - 1], dtype=torch.float32)


def dense_points(b: int, hw0: tuple[int, int]) -> Tensor:
    return grid_coordinates(*hw0)[None].expand(b, -1, -1).contiguous()


def reference(source: Tensor, target: Tensor, points: Tensor, sigma: float = 7.0, beta: float = 0.04):
    config = MatchConfig(sigma=sigma, beta=beta)
    coords, scores = match_points(source.cpu(), target.cpu(), points.cpu(), config)
    return coords, scores


def reference64(source: Tensor, target: Tensor, points: Tensor, sigma: float = 7.0, beta: float = 0.04):
    """The reference's formula evaluated in float64 (``match_points`` itself always runs in float32)."""
    source, target, points = source.cpu().double(), target.cpu().double(), points.cpu().double()
    desc = l2_normalize(sample_descriptors(source, points), dim=-1)
    cells = l2_normalize(target, dim=1).flatten(2)
    sim = torch.bmm(desc, cells)  # (B, N, HW)
    grid = grid_coordinates(*target.shape[-2:]).double()
    peak = grid[sim.argmax(dim=-1)]
    dist2 = ((grid[None, None] - peak[:, :, None]) ** 2).sum(-1)
    prob = torch.softmax(sim * torch.exp(-dist2 / (2.0 * sigma**2)) / beta, dim=-1)
    return (prob @ grid).float(), prob.amax(dim=-1).float()


def decisive(source: Tensor, target: Tensor, points: Tensor) -> Tensor:
    """``(B, N)`` mask of queries whose best cosine beats the runner-up by at least ``NEAR_TIE``."""
    sim = similarity_map(source.cpu(), target.cpu(), points.cpu()).flatten(2)
    if sim.shape[-1] < 2:
        return torch.ones(sim.shape[:2], dtype=torch.bool)
    top2 = sim.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]) >= NEAR_TIE


def assert_close_to_reference(coords, scores, ref_coords, ref_scores, mask, tol: float) -> None:
    coords, scores = coords.float().cpu(), scores.float().cpu()
    assert coords.shape == ref_coords.shape and scores.shape == ref_scores.shape
    assert torch.isfinite(coords).all() and torch.isfinite(scores).all()
    if mask.numel():
        assert mask.float().mean() >= 0.9, "too many near-tie queries: the test would say little"
    err = (coords - ref_coords).abs().amax(dim=-1)[mask]
    assert err.numel() == 0 or err.max() <= tol, f"coords differ by {err.max():.3g} cells (tolerance {tol})"
    score_err = (scores - ref_scores).abs()[mask]
    assert score_err.numel() == 0 or score_err.max() <= max(tol, 1e-4), f"scores differ by {score_err.max():.3g}"


def call_module(module, source: Tensor, target: Tensor, points: Tensor | None, *extra, sigma=7.0, beta=0.04,
                coords: Tensor | None = None, scores: Tensor | None = None):
    """Calls a compiled module's ``kernel_soft_argmax`` directly (outputs may be strided views)."""
    b = source.shape[0]
    n = source.shape[2] * source.shape[3] if points is None else points.shape[1]
    if coords is None:
        coords = torch.full((b, n, 2), float("nan"), device=source.device)
    if scores is None:
        scores = torch.full((b, n), float("nan"), device=source.device)
    cap = torch.utils.dlpack.to_dlpack
    module.kernel_soft_argmax(
        cap(source), cap(target), None if points is None else cap(points), cap(coords), cap(scores), sigma, beta, *extra
    )
    return coords, scores
