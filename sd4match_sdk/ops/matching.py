"""Matching on feature grids: descriptors, cosine maps and (kernel) soft-argmax (docs/design.md §5).

Order of normalisation (docs/design.md §5.1): the query descriptor is bilinearly sampled from the *raw*
source map and normalised afterwards; the target map is normalised per cell. Normalising the
source map before sampling gives different matches at off-grid points.

All coordinates here are grid cells ``(x, y)``: ``x`` indexes columns, ``y`` rows, and cell
centres sit on integers ``0..w-1`` (align-corners). Everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MatchConfig, MatchMethod
from .geometry import grid_to_normalized

__all__ = [
    "l2_normalize",
    "sample_descriptors",
    "similarity_map",
    "grid_coordinates",
    "kernel_soft_argmax",
    "soft_argmax",
    "nearest_neighbour",
    "match_points",
]

#: Added to the norm before dividing, as the official ``L2normalization``.
L2_EPS = 1e-6


def l2_normalize(x: Tensor, dim: int = -1, eps: float = L2_EPS) -> Tensor:
    """``x / (||x|| + eps)`` along ``dim``."""
    return x / (x.norm(dim=dim, keepdim=True) + eps)


def sample_descriptors(featmap: Tensor, points: Tensor) -> Tensor:
    """Bilinearly sample descriptors at grid points (align-corners, zero padding).

    Args:
        featmap: ``(B, C, H, W)`` raw feature map.
        points: ``(B, N, 2)`` grid coordinates ``(x, y)`` on ``featmap``'s grid.

    Returns:
        ``(B, N, C)`` descriptors, not normalised.
    """
    h, w = featmap.shape[-2:]
    grid = grid_to_normalized(points.to(featmap.dtype), (h, w))[:, :, None, :]  # (B, N, 1, 2)
    sampled = F.grid_sample(featmap, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled[..., 0].transpose(1, 2)  # (B, N, C)


def similarity_map(featmap0: Tensor, featmap1: Tensor, points0: Tensor) -> Tensor:
    """Cosine similarity of each query descriptor of map 0 with every cell of map 1.

    Args:
        featmap0: ``(B, C, H0, W0)`` raw source map.
        featmap1: ``(B, C, H1, W1)`` raw target map.
        points0: ``(B, N, 2)`` query points on the source grid.

    Returns:
        ``(B, N, H1, W1)`` cosine similarities in ``[-1, 1]``.
    """
    featmap0 = featmap0.float()
    featmap1 = featmap1.float()
    desc0 = l2_normalize(sample_descriptors(featmap0, points0.float()), dim=-1)  # (B, N, C)
    target = l2_normalize(featmap1, dim=1)  # (B, C, H1, W1)
    b, c, h1, w1 = target.shape
    sim = torch.bmm(desc0, target.reshape(b, c, h1 * w1))
    return sim.reshape(b, -1, h1, w1)


def grid_coordinates(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """``(h*w, 2)`` integer cell centres ``(x, y)`` in row-major order, float32."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _expectation(prob: Tensor, h: int, w: int) -> Tensor:
    """Expected ``(x, y)`` of ``(B, N, h*w)`` probabilities over the cell centres."""
    return prob @ grid_coordinates(h, w, prob.device)  # (B, N, 2)


def kernel_soft_argmax(sim: Tensor, sigma: float = 7.0, beta: float = 0.04) -> tuple[Tensor, Tensor]:
    """Kernel-Soft-Argmax (the paper's "Kernel-Softmax", docs/design.md §5.3).

    ``m = argmax S``; ``S' = S * exp(-||p - m||^2 / (2 sigma^2))`` (the Gaussian multiplies the raw
    cosine); ``P = softmax(S' / beta)`` over all cells; the match is ``sum P * p``.

    Args:
        sim: ``(B, N, H, W)`` similarity maps.
        sigma: Gaussian width in cells (7).
        beta: softmax temperature (0.04).

    Returns:
        ``(B, N, 2)`` expected grid coordinates and ``(B, N)`` scores (the peak probability).
    """
    b, n, h, w = sim.shape
    flat = sim.reshape(b, n, h * w).float()
    grid = grid_coordinates(h, w, sim.device)  # (HW, 2)
    peak = grid[flat.argmax(dim=-1)]  # (B, N, 2)
    dist2 = ((grid[None, None] - peak[:, :, None]) ** 2).sum(-1)  # (B, N, HW)
    suppressed = flat * torch.exp(-dist2 / (2.0 * sigma**2))
    prob = torch.softmax(suppressed / beta, dim=-1)
    return _expectation(prob, h, w), prob.amax(dim=-1)


def soft_argmax(sim: Tensor, beta: float = 0.04) -> tuple[Tensor, Tensor]:
    """Plain soft-argmax: ``sum softmax(S / beta) * p`` over all cells.

    Args:
        sim: ``(B, N, H, W)`` similarity maps.
        beta: softmax temperature.

    Returns:
        ``(B, N, 2)`` grid coordinates and ``(B, N)`` peak probabilities.
    """
    b, n, h, w = sim.shape
    prob = torch.softmax(sim.reshape(b, n, h * w).float() / beta, dim=-1)
    return _expectation(prob, h, w), prob.amax(dim=-1)


def nearest_neighbour(sim: Tensor) -> tuple[Tensor, Tensor]:
    """Integer argmax of the similarity map.

    Returns:
        ``(B, N, 2)`` grid coordinates of the best cell and ``(B, N)`` its cosine similarity.
    """
    b, n, h, w = sim.shape
    flat = sim.reshape(b, n, h * w).float()
    best, idx = flat.max(dim=-1)
    return grid_coordinates(h, w, sim.device)[idx], best


def match_points(featmap0: Tensor, featmap1: Tensor, points0: Tensor, config: MatchConfig | None = None) -> tuple[Tensor, Tensor]:
    """Match query points of map 0 into map 1 with the configured method.

    Args:
        featmap0: ``(B, C, H0, W0)`` raw source feature map.
        featmap1: ``(B, C, H1, W1)`` raw target feature map.
        points0: ``(B, N, 2)`` query points on the source grid.
        config: method, sigma and beta; the faithful defaults when ``None``.

    Returns:
        ``(B, N, 2)`` matches on the target grid and ``(B, N)`` scores.
    """
    config = config or MatchConfig()
    sim = similarity_map(featmap0, featmap1, points0)
    if config.method is MatchMethod.KERNEL_SOFTARGMAX:
        return kernel_soft_argmax(sim, config.sigma, config.beta)
    if config.method is MatchMethod.SOFTARGMAX:
        return soft_argmax(sim, config.beta)
    return nearest_neighbour(sim)
