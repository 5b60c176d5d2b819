"""The SD4Match training loss: Gaussian-smoothed cross-entropy on the similarity map (docs/design.md §8.1, §8.2).

For one pair and each of its keypoints:

1. the query descriptor is bilinearly sampled from the *raw* source map and L2-normalised; the
   target map is L2-normalised per cell (docs/design.md §5.1);
2. ``P = softmax(cos / beta)`` over all target cells (beta = 0.04);
3. the label is a 7x7 grid of taps at integer offsets ``d`` around the continuous target point,
   weighted by ``w(d) = exp(-|d|^2 / (2 sigma^2)) / (2 pi sigma^2)`` with sigma = 1.5 cells and
   *not* renormalised (sum 0.96542, centre 0.07074); ``P`` is read at each tap by bilinear
   sampling (border padding, as ``grid_sample(align_corners=True)`` but with exact weights, see
   :func:`bilinear_sample`) and taps outside the open box ``0 < x < w-1, 0 < y < h-1`` are
   dropped;
4. keypoint loss ``-sum_d w(d) log P(x + d)``; the pair's loss is the mean over its keypoints, the
   batch loss the mean over pairs (pairs weigh the same whatever their keypoint count).

Everything runs in float32. ``log`` never sees 0: with cosines in [-1, 1] and beta = 0.04 every
cell keeps a probability above ``exp(-50) / (h w)``, far above float32's smallest normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ShapeError
from .matching import similarity_map

__all__ = [
    "LOSS_BETA",
    "LABEL_KERNEL_SIZE",
    "label_sigma",
    "label_offsets",
    "gaussian_label_weights",
    "gaussian_cross_entropy",
    "bilinear_sample",
    "pair_loss",
    "batch_loss",
]

#: Softmax temperature of the training loss.
LOSS_BETA = 0.04
#: Side of the label kernel, in cells.
LABEL_KERNEL_SIZE = 7


def label_sigma(size: int = LABEL_KERNEL_SIZE) -> float:
    """The official ``sigma = floor(size / 2) / 2``: 1.5 cells for a 7x7 kernel."""
    return (size // 2) / 2


def label_offsets(size: int = LABEL_KERNEL_SIZE, device: torch.device | None = None) -> Tensor:
    """``(size*size, 2)`` integer offsets ``(dx, dy)`` in ``-size//2 .. size//2``, rows = dy."""
    half = size // 2
    steps = torch.arange(-half, half + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)


def gaussian_label_weights(size: int = LABEL_KERNEL_SIZE, sigma: float | None = None, device: torch.device | None = None) -> Tensor:
    """``(size*size,)`` weights ``exp(-|d|^2 / (2 sigma^2)) / (2 pi sigma^2)``, not renormalised.

    Args:
        size: kernel side (odd).
        sigma: Gaussian width in cells; :func:`label_sigma` when ``None``.
    """
    sigma = label_sigma(size) if sigma is None else float(sigma)
    d2 = (label_offsets(size, device) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)


def gaussian_cross_entropy(
    prob: Tensor, target: Tensor, size: int = LABEL_KERNEL_SIZE, sigma: float | None = None
) -> Tensor:
    """Per-keypoint cross-entropy of probability maps against a truncated Gaussian label.

    Args:
        prob: ``(N, H, W)`` probability maps (each sums to 1 over the grid).
        target: ``(N, 2)`` continuous target points ``(x, y)`` in grid cells.
        size: label kernel side (7).
        sigma: label width in cells (1.5 when ``None``).

    Returns:
        ``(N,)`` losses ``-sum_d w(d) * mask(d) * log P(target + d)``.
    """
    if prob.ndim != 3 or target.shape != (prob.shape[0], 2):
        raise ShapeError(
            f"expected prob (N, H, W) and target (N, 2); got {tuple(prob.shape)} and {tuple(target.shape)}",
            actual=tuple(target.shape),
            expected="(N, 2)",
        )
    n, h, w = prob.shape
    taps = target.float()[:, None, :] + label_offsets(size, prob.device)[None]  # (N, K, 2)
    x, y = taps[..., 0], taps[..., 1]
    inside = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)  # (N, K)
    log_p = torch.log(bilinear_sample(prob.float(), taps))  # (N, K)
    weights = gaussian_label_weights(size, sigma, prob.device)[None]  # (1, K)
    return -(weights * log_p * inside).sum(dim=-1)


def bilinear_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinear values of maps at grid points, border padding (``grid_sample(align_corners=True,
    padding_mode="border")`` computed in grid cells).

    Working in cells keeps the weights exact: a tap on a cell centre reads that cell alone.
    ``grid_sample``'s round trip through [-1, 1] leaves ~1e-7 of a neighbour in, which the
    ``log`` of the loss magnifies where probabilities span many orders of magnitude.

    Args:
        maps: ``(N, H, W)`` with ``H, W >= 2``.
        points: ``(N, K, 2)`` points ``(x, y)`` in cells.

    Returns:
        ``(N, K)`` sampled values.
    """
    n, h, w = maps.shape
    if h < 2 or w < 2:
        raise ShapeError(f"maps must be at least 2 x 2 cells; got {h} x {w}", actual=tuple(maps.shape))
    x = points[..., 0].clamp(0, w - 1)
    y = points[..., 1].clamp(0, h - 1)
    x0 = x.floor().clamp(max=w - 2)
    y0 = y.floor().clamp(max=h - 2)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    flat = maps.reshape(n, h * w)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return flat.gather(1, yy * w + xx)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def pair_loss(
    featmap0: Tensor,
    featmap1: Tensor,
    points0: Tensor,
    points1: Tensor,
    beta: float = LOSS_BETA,
    size: int = LABEL_KERNEL_SIZE,
    sigma: float | None = None,
) -> Tensor:
    """Loss of one pair: mean over its keypoints.

    Args:
        featmap0: ``(C, H0, W0)`` raw source feature map.
        featmap1: ``(C, H1, W1)`` raw target feature map.
        points0: ``(N, 2)`` source keypoints in source grid cells (``x * (W0-1) / (frame-1)``).
        points1: ``(N, 2)`` target keypoints in target grid cells.
        beta: softmax temperature (0.04).
        size, sigma: the label kernel.

    Returns:
        scalar float32 tensor.
    """
    if points0.ndim != 2 or points0.shape[-1] != 2 or points0.shape != points1.shape or points0.shape[0] == 0:
        raise ShapeError(
            f"points0 and points1 must both be (N, 2) with N >= 1; got {tuple(points0.shape)} and {tuple(points1.shape)}",
            actual=tuple(points0.shape),
            expected="(N, 2), N >= 1",
        )
    sim = similarity_map(featmap0[None], featmap1[None], points0[None].to(featmap0.device))[0]  # (N, H1, W1)
    n, h, w = sim.shape
    prob = torch.softmax(sim.reshape(n, h * w) / beta, dim=-1).reshape(n, h, w)
    return gaussian_cross_entropy(prob, points1.to(sim.device), size, sigma).mean()


def batch_loss(
    featmaps0: Tensor,
    featmaps1: Tensor,
    points0: Sequence[Tensor],
    points1: Sequence[Tensor],
    beta: float = LOSS_BETA,
    size: int = LABEL_KERNEL_SIZE,
    sigma: float | None = None,
) -> Tensor:
    """Mean of :func:`pair_loss` over B pairs (each pair may have its own keypoint count).

    Args:
        featmaps0: ``(B, C, H0, W0)`` raw source maps.
        featmaps1: ``(B, C, H1, W1)`` raw target maps.
        points0, points1: B tensors of shape ``(N_b, 2)`` in grid cells.
    """
    b = featmaps0.shape[0]
    if featmaps1.shape[0] != b or len(points0) != b or len(points1) != b:
        raise ShapeError(
            f"batch sizes differ: {b} source maps, {featmaps1.shape[0]} target maps, "
            f"{len(points0)} and {len(points1)} keypoint sets"
        )
    losses = [pair_loss(featmaps0[i], featmaps1[i], points0[i], points1[i], beta, size, sigma) for i in range(b)]
    return torch.stack(losses).mean()
