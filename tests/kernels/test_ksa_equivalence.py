"""The fused kernel equals the torch reference (docs/design.md §5.3) on every implementation.

Each test runs on the ``runner`` fixture: the CPU module, the CUDA module (skipped without a GPU)
and the CUDA source compiled for the CPU emulation (``kernels/emu``). Known answers computed by
hand check the formula itself, independent of the reference.
"""

from __future__ import annotations

import math

import pytest
import torch

from ksa_cases import (
    FP16_TOL,
    FP32_TOL,
    assert_close_to_reference,
    covered_points,
    decisive,
    dense_points,
    query_points,
    random_maps,
    reference,
    reference64,
    smooth_maps,
)

MAPS = {"random": random_maps, "smooth": smooth_maps}
TOL = {torch.float32: FP32_TOL, torch.float16: FP16_TOL}


FP32_MATH = 1  # SD4M_KSA_FP32_MATH


def _check(runner, source, target, points, tol, sigma=7.0, beta=0.04, dense=False, flags=0):
    coords, scores = runner(source, target, None if dense else points, sigma, beta, flags)
    ref_coords, ref_scores = reference(source, target, points, sigma, beta)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source, target, points), tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "kind,b,c,hw0,hw1,n",
    [
        ("random", 2, 24, (9, 11), (7, 13), 40),  # A and B of different sizes, corners and edges
        ("smooth", 2, 48, (20, 17), (23, 19), 150),  # several query blocks and partial cell tiles
        ("smooth", 1, 40, (12, 12), (12, 12), 33),  # channels not a multiple of any tile
        ("random", 3, 8, (5, 4), (1, 6), 1),  # N = 1, batch 3, a one-row target
    ],
)
def test_sparse_matches_reference(runner, kind, b, c, hw0, hw1, n, dtype):
    source, target = MAPS[kind](b, c, hw0, hw1, seed=n)
    source, target = source.to(dtype), target.to(dtype)
    _check(runner, source, target, query_points(b, n, hw0, seed=n), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "kind,b,c,hw0,hw1",
    [
        ("random", 2, 16, (6, 7), (8, 5)),
        ("smooth", 1, 32, (14, 13), (12, 15)),  # 182 queries: two query blocks on CUDA
    ],
)
def test_dense_matches_reference(runner, kind, b, c, hw0, hw1, dtype):
    source, target = MAPS[kind](b, c, hw0, hw1, seed=7)
    source, target = source.to(dtype), target.to(dtype)
    _check(runner, source, target, dense_points(b, hw0), TOL[dtype], dense=True)


def test_fp16_maps_with_fp32_math(runner):
    """The SD4M_KSA_FP32_MATH flag: float16 maps correlated with FMA instead of tensor cores."""
    source, target = smooth_maps(2, 40, (13, 11), (12, 14), seed=9)
    source, target = source.half(), target.half()
    _check(runner, source, target, query_points(2, 30, (13, 11), seed=9), FP16_TOL, flags=FP32_MATH)
    _check(runner, source, target, dense_points(2, (13, 11)), FP16_TOL, dense=True, flags=FP32_MATH)


def test_realistic_size_matches_reference(runner):
    """C=1280 on a 48x48 grid, the SD4Match feature size (too slow for the emulation).

    Queries with a true match have peaked softmaxes, where the float32 reference is accurate and
    the kernel must equal it. Queries without one (the corners here) spread their softmax over
    the whole grid; the float32 reference then drifts by up to ~3e-4 cells from the exact value,
    so there the kernel is held to the float64 evaluation of the same formula instead.
    """
    if runner.kind == "cuda_emulated":
        pytest.skip("too large for the CPU emulation of the CUDA kernel")
    source, target = smooth_maps(2, 1280, (48, 48), (48, 48), seed=3)
    _check(runner, source, target, covered_points(2, 40, (48, 48), seed=3), FP32_TOL)
    points = query_points(2, 20, (48, 48), seed=4)
    coords, scores = runner(source, target, points)
    exact_coords, exact_scores = reference64(source, target, points)
    assert_close_to_reference(coords, scores, exact_coords, exact_scores, decisive(source, target, points), FP32_TOL)


@pytest.mark.parametrize("sigma,beta", [(2.5, 0.1), (30.0, 0.01)])
def test_other_sigma_and_beta(runner, sigma, beta):
    source, target = smooth_maps(2, 16, (10, 9), (11, 8), seed=5)
    _check(runner, source, target, query_points(2, 25, (10, 9), seed=5), FP32_TOL, sigma=sigma, beta=beta)


def test_non_contiguous_inputs(runner):
    """Channels-last, channel-strided and spatially transposed maps; points from a transposed view."""
    base0, base1 = smooth_maps(2, 64, (11, 13), (9, 12), seed=11)
    source = base0[:, ::2].contiguous(memory_format=torch.channels_last)  # (2, 32, 11, 13), channels last
    target = base1[:, 1::2].transpose(2, 3)  # (2, 32, 12, 9), channel stride 2, swapped H/W strides
    assert not source.is_contiguous() and not target.is_contiguous()
    points = query_points(2, 30, (11, 13), seed=2).transpose(1, 2).contiguous().transpose(1, 2)
    assert not points.is_contiguous()
    _check(runner, source, target, points, FP32_TOL)
    _check(runner, source, target, dense_points(2, (11, 13)), FP32_TOL, dense=True)


def test_no_queries_and_empty_batch(runner):
    source, target = random_maps(2, 8, (4, 5), (3, 3), seed=0)
    coords, scores = runner(source, target, torch.zeros(2, 0, 2))
    assert coords.shape == (2, 0, 2) and scores.shape == (2, 0)
    coords, scores = runner(source[:0], target[:0], torch.zeros(0, 3, 2))
    assert coords.shape == (0, 3, 2) and scores.shape == (0, 3)


def _kernel_softargmax_by_hand(cos: list[float], w: int, sigma: float, beta: float):
    """Kernel-Soft-Argmax of one cosine row on a ``(len/w, w)`` grid, in float64."""
    peak = max(range(len(cos)), key=lambda j: (cos[j], -j))  # the first maximum
    px, py = peak % w, peak // w
    logits = []
    for j, s in enumerate(cos):
        d2 = (j % w - px) ** 2 + (j // w - py) ** 2
        logits.append(s * math.exp(-d2 / (2 * sigma**2)) / beta)
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    z = sum(e)
    x = sum(p * (j % w) for j, p in enumerate(e)) / z
    y = sum(p * (j // w) for j, p in enumerate(e)) / z
    return (x, y), 1.0 / z


def test_known_answer_one_row(runner):
    """Target cells along x: cosines 1, 0, -1 with the query (1, 0); computed by hand."""
    target = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).reshape(1, 2, 1, 3)
    source = torch.tensor([3.0, 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()  # every cell (3, 0)
    points = torch.tensor([[[0.5, 0.5]]])
    (x, y), score = _kernel_softargmax_by_hand([1.0, 0.0, -1.0], 3, sigma=1.5, beta=0.5)
    coords, scores = runner(source, target, points, 1.5, 0.5)
    assert coords[0, 0, 0].item() == pytest.approx(x, abs=1e-5)
    assert coords[0, 0, 1].item() == pytest.approx(y, abs=1e-6)
    assert scores[0, 0].item() == pytest.approx(score, abs=1e-6)


def test_tie_takes_the_first_maximum(runner):
    """Cells 1 and 3 of a 2x2 target tie for the maximum: the Gaussian centres on cell 1 (x=1, y=0)."""
    cos = [0.0, 0.8, -0.6, 0.8]
    # unit vectors with these cosines to the query (1, 0): (c, sqrt(1 - c^2))
    cells = torch.tensor([[c, math.sqrt(1 - c * c)] for c in cos]).T.reshape(1, 2, 2, 2)
    source = torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 3, 3).contiguous()
    (x, y), score = _kernel_softargmax_by_hand(cos, 2, sigma=0.7, beta=0.2)
    assert (x, y) != pytest.approx(_kernel_softargmax_by_hand([0.0, 0.8, -0.6, 0.8 + 1e-3], 2, 0.7, 0.2)[0])
    coords, scores = runner(source, cells, torch.tensor([[[1.0, 1.0]]]), 0.7, 0.2)
    assert coords[0, 0].tolist() == pytest.approx([x, y], abs=1e-5)
    assert scores[0, 0].item() == pytest.approx(score, abs=1e-5)


def test_query_outside_the_map_gives_the_uniform_answer(runner):
    """A query beyond every corner samples zeros: all cosines are 0, so the softmax is uniform."""
    source, target = random_maps(1, 8, (4, 4), (5, 7), seed=1)
    coords, scores = runner(source, target, torch.tensor([[[-3.0, -3.0], [10.0, 1.0]]]))
    assert coords[0].flatten().tolist() == pytest.approx([3.0, 2.0, 3.0, 2.0], abs=1e-5)
    assert scores[0].tolist() == pytest.approx([1 / 35, 1 / 35], abs=1e-7)
