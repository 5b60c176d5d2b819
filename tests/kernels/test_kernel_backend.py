"""The Python side of the kernel: the match_points-shaped wrapper and Matcher's backend choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ksa_cases import FP32_TOL, assert_close_to_reference, decisive, query_points, reference, smooth_maps
from sd4match_sdk import Matcher
from sd4match_sdk.backends import kernel
from sd4match_sdk.config import MatchConfig, MatchMethod
from sd4match_sdk.errors import BackendUnavailableError, ConfigError, ShapeError
from sd4match_sdk.matcher import _select_matching_backend
from sd4match_sdk.ops import matching


@pytest.fixture(autouse=True)
def _built(cpu_module):
    """Every test here needs the CPU module (the fixture fails or skips without it)."""


def test_emulated_cuda_module_reports_a_usable_device(emulated_cuda_module):
    assert emulated_cuda_module.check_device(0) == (True, "")
    assert emulated_cuda_module.EMULATED


@pytest.mark.parametrize(
    "dtype0,dtype1", [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)]
)
def test_wrapper_matches_reference_and_casts_dtypes(dtype0, dtype1):
    source, target = smooth_maps(2, 32, (12, 10), (9, 14), seed=1)
    source, target = source.to(dtype0), target.to(dtype1)
    points = query_points(2, 30, (12, 10), seed=1)
    coords, scores = kernel.match_points(source, target, points, MatchConfig())
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    ref_coords, ref_scores = reference(source.float(), target.float(), points)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source.float(), target.float(), points), FP32_TOL)


def test_wrapper_dense_mode_and_gradients_are_detached():
    source, target = smooth_maps(1, 16, (5, 6), (7, 4), seed=2)
    source.requires_grad_(True)
    coords, scores = kernel.kernel_soft_argmax(source, target)
    assert coords.shape == (1, 30, 2) and scores.shape == (1, 30) and not coords.requires_grad
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    dense = torch.stack([xs.flatten(), ys.flatten()], -1)[None]
    ref_coords, ref_scores = reference(source.detach(), target, dense)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source.detach(), target, dense), FP32_TOL)


@pytest.mark.parametrize("method", [MatchMethod.SOFTARGMAX, MatchMethod.NN])
def test_other_methods_fall_back_to_torch(method):
    source, target = smooth_maps(1, 8, (6, 6), (6, 6), seed=3)
    points = query_points(1, 10, (6, 6), seed=3)
    config = MatchConfig(method=method)
    for fn in (kernel.match_points, kernel.match_points_strict):
        coords, scores = fn(source, target, points, config)
        ref_coords, ref_scores = matching.match_points(source, target, points, config)
        assert torch.equal(coords, ref_coords) and torch.equal(scores, ref_scores)


def test_bad_shapes_raise_shape_error():
    source, target = smooth_maps(1, 8, (6, 6), (6, 6), seed=3)
    with pytest.raises(ShapeError):
        kernel.kernel_soft_argmax(source[0], target)
    with pytest.raises(ShapeError):
        kernel.kernel_soft_argmax(source, target[:, :4])
    with pytest.raises(ShapeError):
        kernel.kernel_soft_argmax(source, target, torch.zeros(1, 5, 3))


def test_strict_raises_where_no_kernel_is_built():
    meta = torch.zeros(1, 4, 3, 3, device="meta")
    with pytest.raises(BackendUnavailableError):
        kernel.match_points_strict(meta, meta, torch.zeros(1, 2, 2, device="meta"), MatchConfig())
    assert not kernel.kernel_supports("meta")


def test_invalid_parameters_reach_the_c_validation(cpu_module):
    source, target = smooth_maps(1, 8, (4, 4), (4, 4), seed=0)
    with pytest.raises(ValueError, match="sigma and beta"):
        kernel.kernel_soft_argmax(source, target, query_points(1, 3, (4, 4), seed=0), sigma=-1.0)


def test_select_matching_backend():
    fn, name = _select_matching_backend("kernel")
    assert (fn, name) == (kernel.match_points_strict, "kernel")
    assert _select_matching_backend("auto") == (kernel.match_points, "kernel")
    assert _select_matching_backend("torch") == (matching.match_points, "torch")
    with pytest.raises(ConfigError):
        _select_matching_backend("cuda")


def test_matcher_kernel_backend_matches_torch_backend(tmp_path_factory):
    """End to end on the tiny SD model: the kernel and the torch path give the same matches."""
    from sd4match_sdk.testing import build_tiny_sd

    model_dir = build_tiny_sd(tmp_path_factory.mktemp("kernel_tiny_sd"))
    rng = np.random.default_rng(0)
    img0 = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    img1 = rng.integers(0, 255, (100, 90, 3), dtype=np.uint8)
    points = [[0, 0], [119, 79], [60.5, 20.25], [3, 70]]
    torch_matcher = Matcher.from_pretrained(str(model_dir), image_size=256, ensemble=1, matching_backend="torch")
    kernel_matcher = Matcher(torch_matcher.backend, torch_matcher.match_config, matching_backend="kernel")
    assert (torch_matcher.matching_backend, kernel_matcher.matching_backend) == ("torch", "kernel")
    results = {m.matching_backend: m.match(img0, img1, points, seed=0) for m in (torch_matcher, kernel_matcher)}
    np.testing.assert_allclose(results["kernel"].points, results["torch"].points, atol=5e-3)  # ~1e-4 cells
    np.testing.assert_allclose(results["kernel"].scores, results["torch"].scores, atol=1e-4)


def test_cuda_module_can_run_on_the_device(cuda_module):
    ok, reason = cuda_module.check_device(torch.cuda.current_device())
    assert ok, reason
    assert kernel.kernel_supports("cuda")


def test_cuda_wrapper_on_a_side_stream_matches_reference(cuda_module):
    """The wrapper enqueues on torch's current stream and allocates its workspace from torch."""
    source, target = smooth_maps(2, 64, (16, 14), (15, 17), seed=6)
    points = query_points(2, 40, (16, 14), seed=6)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        s, t, p = source.half().cuda(), target.half().cuda(), points.cuda()
        coords, scores = kernel.kernel_soft_argmax(s, t, p)
    side.synchronize()
    ref_coords, ref_scores = reference(source.half(), target.half(), points)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source.half().float(), target.half().float(), points), 1e-2)
