"""The Python face of the compiled kernel (sd4match_sdk.kernels): the match_points-shaped wrapper and the
matching backends a Matcher can choose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ksa_cases import FP32_TOL, assert_close_to_reference, decisive, query_points, reference, smooth_maps
from sd4match_sdk import Matcher
from sd4match_sdk import kernels
from sd4match_sdk.config import MatchConfig, MatchingBackend, MatchMethod
from sd4match_sdk.errors import BackendUnavailableError, ConfigError, ShapeError
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
    coords, scores = kernels.match_points(source, target, points, MatchConfig())
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    ref_coords, ref_scores = reference(source.float(), target.float(), points)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source.float(), target.float(), points), FP32_TOL)


def test_wrapper_dense_mode_and_gradients_are_detached():
    source, target = smooth_maps(1, 16, (5, 6), (7, 4), seed=2)
    source.requires_grad_(True)
    coords, scores = kernels.fused_kernel_soft_argmax(source, target)
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
    for fn in (kernels.match_points, kernels.match_points_strict):
        coords, scores = fn(source, target, points, config)
        ref_coords, ref_scores = matching.match_points(source, target, points, config)
        assert torch.equal(coords, ref_coords) and torch.equal(scores, ref_scores)


def test_bad_shapes_raise_shape_error():
    source, target = smooth_maps(1, 8, (6, 6), (6, 6), seed=3)
    with pytest.raises(ShapeError):
        kernels.fused_kernel_soft_argmax(source[0], target)
    with pytest.raises(ShapeError):
        kernels.fused_kernel_soft_argmax(source, target[:, :4])
    with pytest.raises(ShapeError):
        kernels.fused_kernel_soft_argmax(source, target, torch.zeros(1, 5, 3))


def test_strict_raises_where_no_kernel_is_built():
    meta = torch.zeros(1, 4, 3, 3, device="meta")
    with pytest.raises(BackendUnavailableError):
        kernels.match_points_strict(meta, meta, torch.zeros(1, 2, 2, device="meta"), MatchConfig())
    assert not kernels.kernel_supports("meta")


def test_invalid_parameters_reach_the_c_validation(cpu_module):
    source, target = smooth_maps(1, 8, (4, 4), (4, 4), seed=0)
    with pytest.raises(ValueError, match="sigma and beta"):
        kernels.fused_kernel_soft_argmax(source, target, query_points(1, 3, (4, 4), seed=0), sigma=-1.0)


class TestMatchingBackends:
    """What each ``matching_backend`` does, observed through its results."""

    def setup_method(self):
        self.source, self.target = smooth_maps(1, 8, (6, 6), (6, 6), seed=4)
        self.points = query_points(1, 10, (6, 6), seed=4)

    def test_torch_is_the_reference_exactly(self):
        fn, resolved = kernels.match_function("torch")
        assert resolved is MatchingBackend.TORCH
        got = fn(self.source, self.target, self.points, MatchConfig())
        want = matching.match_points(self.source, self.target, self.points, MatchConfig())
        assert all(torch.equal(a, b) for a, b in zip(got, want))

    @pytest.mark.parametrize("name", ["kernel", "auto"])
    def test_kernel_and_auto_run_the_kernel_on_the_cpu(self, name):
        fn, resolved = kernels.match_function(name)
        assert resolved is MatchingBackend.KERNEL
        coords, scores = fn(self.source, self.target, self.points, MatchConfig())
        direct = kernels.fused_kernel_soft_argmax(self.source, self.target, self.points)
        assert torch.equal(coords, direct[0]) and torch.equal(scores, direct[1])

    def test_kernel_refuses_a_device_without_a_built_kernel_and_auto_falls_back(self):
        meta = torch.zeros(1, 4, 3, 3, device="meta")
        points = torch.zeros(1, 2, 2, device="meta")
        strict, _ = kernels.match_function("kernel")
        with pytest.raises(BackendUnavailableError):
            strict(meta, meta, points, MatchConfig())
        fallback, _ = kernels.match_function("auto")
        coords, _ = fallback(meta, meta, points, MatchConfig())  # the torch reference runs on meta
        assert coords.device.type == "meta" and coords.shape == (1, 2, 2)

    def test_unknown_backend_lists_the_known_ones(self):
        with pytest.raises(ConfigError, match="auto, torch, kernel"):
            kernels.match_function("cuda")


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
    assert kernels.kernel_supports("cuda")


def test_cuda_wrapper_on_a_side_stream_matches_reference(cuda_module):
    """The wrapper enqueues on torch's current stream and allocates its workspace from torch."""
    source, target = smooth_maps(2, 64, (16, 14), (15, 17), seed=6)
    points = query_points(2, 40, (16, 14), seed=6)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        s, t, p = source.half().cuda(), target.half().cuda(), points.cuda()
        coords, scores = kernels.fused_kernel_soft_argmax(s, t, p)
    side.synchronize()
    ref_coords, ref_scores = reference(source.half(), target.half(), points)
    assert_close_to_reference(coords, scores, ref_coords, ref_scores, decisive(source.half().float(), target.half().float(), points), 1e-2)
