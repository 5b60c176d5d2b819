"""The CUDA-only paths: float16 VAE default, float32 parity, CUDA graphs, pinned copies (docs/design.md §13.20-13.22).

Skipped without a CUDA device; ``benchmarks/gpu_session.sh`` runs them on the GPU machine
(``python -m pytest -m gpu tests/features/test_cuda.py``). Its rehearsal runs them on the CPU
(``SD4MATCH_GPU_TESTS_ON=cpu``): every call, point and tolerance is then exercised, and only what
the CPU cannot show is left out (the TF32 flag, the float16 default, the CUDA provider), so that a
broken test shows up before device time is spent on it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sd4match_sdk import Matcher

DEVICE = os.environ.get("SD4MATCH_GPU_TESTS_ON", "cuda")
ON_CUDA = DEVICE == "cuda"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU")]

POINTS = [[100.0, 200.0], [550.0, 500.0], [1099.0, 1098.0], [0.0, 0.0]]  # in the demo source (1100 px and more)
IN_BOTH = POINTS[:2]  # also in the demo target (965 x 964), for the reversed pair
FP32 = dict(dtype=torch.float32, vae_dtype=torch.float32)


def _small(**kw):
    return dict(ensemble=2, image_size=256, matching_backend="torch", **kw)


def _pair_features(matcher: Matcher, pair, category=None, seed: int = 0) -> torch.Tensor:
    """Raw features of one pair (source, target) for a seed, on the CPU."""
    from sd4match_sdk.images import load_image

    noises = [matcher.draw_pair_noise(seed=seed)]
    src, trg = (load_image(p) for p in pair)
    return matcher.backend.extract_pairs([src], [trg], [category], noises).float().cpu()


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def test_float32_on_cuda_equals_the_cpu_reference_without_flag_flips(tiny_sd, demo_pair) -> None:
    """float32 stays exact on CUDA (TF32 off once at build), and no call writes the flag."""
    cpu = Matcher.from_pretrained(str(tiny_sd), **_small())
    gpu = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, **_small(**FP32))
    assert gpu.backend.components.vae.dtype == torch.float32
    assert not (ON_CUDA and torch.backends.cudnn.allow_tf32)
    src, trg = demo_pair
    got, want = gpu.match(src, trg, POINTS, seed=0), cpu.match(src, trg, POINTS, seed=0)
    assert not (ON_CUDA and torch.backends.cudnn.allow_tf32)
    deviation = np.abs(got.points - want.points).max()
    print(f"float32 CUDA vs CPU: features {_relative(_pair_features(gpu, demo_pair), _pair_features(cpu, demo_pair)):.2e} rel, matches {deviation:.4f} px")
    assert _relative(_pair_features(gpu, demo_pair), _pair_features(cpu, demo_pair)) < 1e-4
    np.testing.assert_allclose(got.points, want.points, atol=0.05)
    batched = gpu.match_batch([(src, trg, POINTS), (trg, src, IN_BOTH)], seed=0)
    np.testing.assert_allclose(batched[0].points, got.points, atol=0.05)


def test_the_default_runs_the_vae_in_float16(tiny_sd, demo_pair) -> None:
    on_cpu = {} if ON_CUDA else dict(dtype=torch.float16, vae_dtype=torch.float16)  # the CPU defaults to float32
    default = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, **_small(**on_cpu))
    exact = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, **_small(**FP32))
    assert default.backend.components.vae.dtype == default.backend.components.unet.dtype == torch.float16
    src, trg = demo_pair
    relative = _relative(_pair_features(default, demo_pair, seed=1), _pair_features(exact, demo_pair, seed=1))
    deviation = np.abs(default.match(src, trg, POINTS, seed=1).points - exact.match(src, trg, POINTS, seed=1).points).max()
    print(f"float16 default vs float32 on CUDA (tiny model, random weights): features {relative:.2e} rel, matches {deviation:.4f} px")
    assert relative < 5e-2


def test_pinned_pipelined_batches_equal_one_at_a_time(tiny_sd, demo_pair) -> None:
    m = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, memory_budget=1, **_small(**FP32))
    src, trg = demo_pair
    pairs = [(src, trg, POINTS), (trg, src, IN_BOTH), (src, src, POINTS[:1])]
    for pair, got in zip(pairs, m.match_batch(pairs, seed=6)):
        np.testing.assert_allclose(got.points, m.match(*pair, seed=6).points, atol=0.01)


def _onnxruntime_without_cuda() -> str | None:
    """Why the ORT test cannot run here, checked before its engine fixture is exported."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if ON_CUDA and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


@pytest.mark.skipif(_onnxruntime_without_cuda() is not None, reason=str(_onnxruntime_without_cuda()))
def test_onnxruntime_binds_cuda_tensors(engine_single, demo_pair) -> None:
    m = Matcher.from_pretrained(str(engine_single), device=DEVICE)
    runner = m.backend.runners["unet"]
    assert runner.io_binding == ON_CUDA and runner.device.type == DEVICE  # the CPU provider binds only when asked
    src, trg = demo_pair
    features = m.features(src, seed=0).features
    assert features.device.type == DEVICE
    reference = Matcher.from_pretrained(str(engine_single)).features(src, seed=0).features
    torch.testing.assert_close(features.cpu(), reference, atol=1e-3, rtol=1e-3)


# Last: the slowest test (cold inductor compiles), so that a step time limit cuts the fewest tests.
@pytest.mark.parametrize(
    "kind, precision", [("text", "fp16"), ("single", "fp16"), ("class", "fp16"), ("cpm", "fp16"), ("single", "fp32")]
)
def test_compiled_with_cuda_graphs_equals_eager(kind, precision, tiny_sd, tiny_dino, export_prompts, demo_pair) -> None:
    """Features within float tolerance of eager; in float32 the matches too. Batched calls replay
    the same graphs (one pair per batch) and give the single-call matches."""
    prompt = "a photo of a {category}" if kind == "text" else str(export_prompts[kind])
    options = _small(prompt=prompt, **(FP32 if precision == "fp32" else {}))
    if kind == "cpm":
        options["dino"] = str(tiny_dino)
    eager = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, **options)
    compiled = Matcher.from_pretrained(str(tiny_sd), device=DEVICE, compile=True, memory_budget=1, **options)
    cat = "cat" if kind in ("text", "class") else None
    src, trg = demo_pair
    for seed in (3, 4):  # on CUDA the first call warms up and the second records the graphs; later calls replay them
        got, want = _pair_features(compiled, demo_pair, cat, seed), _pair_features(eager, demo_pair, cat, seed)
        assert _relative(got, want) < (1e-4 if precision == "fp32" else 1e-2)
    singles = [compiled.match(src, trg, POINTS, category=cat, seed=5), compiled.match(trg, src, IN_BOTH, category=cat, seed=6)]
    pairs = [(src, trg, POINTS, cat), (trg, src, IN_BOTH, cat)]
    batched = compiled.match_batch(pairs, generators=[torch.Generator().manual_seed(s) for s in (5, 6)])
    for got, single in zip(batched, singles):
        np.testing.assert_allclose(got.points, single.points, atol=1e-3)
    if precision == "fp32":
        np.testing.assert_allclose(singles[0].points, eager.match(src, trg, POINTS, category=cat, seed=5).points, atol=2e-3)
