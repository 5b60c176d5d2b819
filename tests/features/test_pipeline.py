"""Batches under a memory budget and host work overlapped with device work (docs/design.md §13.22)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sd4match_sdk import ConfigError, Matcher
from sd4match_sdk.config import FeatureConfig
from sd4match_sdk.features.budget import UNET_UNITS, VAE_UNITS, BatchBudget, available_memory
from sd4match_sdk.features.pipeline import chunks, overlaps_host, prefetched

POINTS = [[100.0, 200.0], [550.0, 500.0]]


def test_chunks() -> None:
    assert chunks(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunks(3, 0) == [range(0, 1), range(1, 2), range(2, 3)] and chunks(0, 4) == []


def test_prefetched_keeps_order_runs_ahead_on_a_worker_and_raises_where_taken() -> None:
    started = [threading.Event() for _ in range(3)]
    threads = []

    def task(i: int):
        def run():
            threads.append(threading.current_thread().name)
            started[i].set()
            return i

        return run

    results = []
    for result in prefetched([task(i) for i in range(3)]):
        if result + 1 < 3:  # while the caller holds result k, task k + 1 is already running
            assert started[result + 1].wait(timeout=10)
        results.append(result)
    assert results == [0, 1, 2]
    assert all(name.startswith("sd4match-prepare") for name in threads)
    assert list(prefetched([task(0)])) == [0]

    def broken():
        raise ValueError("bad image")

    results = prefetched([task(0), broken])
    assert next(results) == 0
    with pytest.raises(ValueError, match="bad image"):
        next(results)


def test_on_the_cpu_preparation_runs_inline() -> None:
    """On a CPU the worker would compete with the model for the cores: the caller's thread prepares."""
    threads = []
    tasks = [lambda i=i: threads.append(threading.current_thread()) or i for i in range(3)]
    assert list(prefetched(tasks, overlaps_host(torch.device("cpu")))) == [0, 1, 2]
    assert threads == [threading.current_thread()] * 3
    assert overlaps_host(torch.device("cuda", 0)) and not overlaps_host(torch.device("cpu"))


def test_budget_counts_the_larger_stage() -> None:
    config = FeatureConfig(image_size=768, ensemble=8)
    budget = BatchBudget(config, 128, 320, torch.float16, torch.float16, torch.device("cpu"), memory_budget=20 * 2**30)
    unet = 8 * UNET_UNITS * 320 * 96 * 96 * 2
    assert budget.bytes_per_image == max(VAE_UNITS * 128 * 768 * 768 * 2, unet) == unet
    assert budget.images() == 20 * 2**30 // unet
    assert BatchBudget(config, 128, 320, torch.float32, torch.float16, torch.device("cpu"), 1).images() == 1
    assert BatchBudget(config, 128, 320, torch.float32, torch.float32, torch.device("cpu")).images() >= 1  # free memory
    with pytest.raises(ConfigError, match="memory_budget"):
        BatchBudget(config, 128, 320, torch.float32, torch.float32, torch.device("cpu"), 0)


def test_cuda_memory_torch_caches_unused_counts_as_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm process keeps its first batch's activations in torch's cache, outside cudaMemGetInfo's
    free bytes: the next batch reuses them, so the default budget must not shrink after one batch."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * gib, 140 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 70 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 10 * gib)
    assert available_memory(torch.device("cuda", 0)) == (40 + 70 - 10) * gib


@pytest.fixture(scope="module")
def budget_matcher(tiny_sd):
    """One image per device batch: requests are split into many batches."""
    return Matcher.from_pretrained(str(tiny_sd), ensemble=2, image_size=256, memory_budget=1)


def _count_runs(matcher: Matcher) -> list[int]:
    sizes: list[int] = []
    original = matcher.backend.extract_prepared
    matcher.backend.extract_prepared = lambda prepared: sizes.append(len(prepared.images)) or original(prepared)
    return sizes


def test_match_batch_under_a_budget_equals_one_batch(budget_matcher: Matcher, matcher256: Matcher, demo_pair) -> None:
    src, trg = demo_pair
    pairs = [(src, trg, POINTS), (trg, src, []), (trg, src, POINTS[:1]), (src, src, POINTS)]
    runs = _count_runs(budget_matcher)
    chunked = budget_matcher.match_batch(pairs, seed=5)
    assert runs == [2, 2, 2]  # one pair per batch; the pair without points runs nothing
    for got, expected in zip(chunked, matcher256.match_batch(pairs, seed=5)):
        assert len(got) == len(expected)
        np.testing.assert_allclose(got.points, expected.points, atol=1e-3)


def test_features_batch_under_a_budget(budget_matcher: Matcher, matcher256: Matcher, demo_pair) -> None:
    images = [demo_pair[0], demo_pair[1], demo_pair[0]]
    runs = _count_runs(budget_matcher)
    chunked = budget_matcher.features_batch(images, seed=2)
    assert runs == [1, 1, 1] and [f.size for f in chunked] == [(1100, 1099), (965, 964), (1100, 1099)]
    for got, expected in zip(chunked, matcher256.features_batch(images, seed=2)):
        torch.testing.assert_close(got.features, expected.features, atol=1e-4, rtol=1e-4)


def test_a_shared_generator_draws_in_pair_order(budget_matcher: Matcher, demo_pair) -> None:
    """Preparation runs one batch ahead on a worker, yet a generator shared by all pairs draws for
    pair 0, then pair 1, as consecutive match calls do."""
    src, trg = demo_pair
    pairs = [(src, trg, POINTS), (trg, src, POINTS)]
    shared = torch.Generator().manual_seed(9)
    batched = budget_matcher.match_batch(pairs, generators=[shared, shared])
    sequential = torch.Generator().manual_seed(9)
    for pair, got in zip(pairs, batched):
        np.testing.assert_allclose(got.points, budget_matcher.match(*pair, generator=sequential).points, atol=1e-4)


def test_an_invalid_pair_raises_from_its_batch(budget_matcher: Matcher, demo_pair, tmp_path) -> None:
    from sd4match_sdk import ImageError, PointsError

    src, trg = demo_pair
    with pytest.raises(ImageError, match="not found"):
        budget_matcher.match_batch([(src, trg, POINTS), (tmp_path / "missing.png", trg, POINTS)], seed=0)
    with pytest.raises(PointsError):
        budget_matcher.match_batch([(src, trg, POINTS), (src, trg, [[1e6, 0.0]])], seed=0)


def test_torch_compile_rewinds_draws_from_the_global_rng_made_while_it_compiles() -> None:
    """The premise of the next test (docs/design.md §13.22): a draw made during a compilation (here by
    the backend itself, as a worker thread would) is undone when the compilation ends."""

    def drawing_backend(graph_module, example_inputs):
        torch.randn(3)  # a draw during the compilation
        return graph_module.forward

    compiled = torch.compile(lambda x: x + 1, backend=drawing_backend)
    torch.manual_seed(0)
    first = torch.randn(3)
    torch.manual_seed(0)
    compiled(torch.ones(2))
    assert torch.equal(torch.randn(3), first)


def test_only_calls_with_their_own_generators_prepare_on_a_worker(budget_matcher: Matcher, demo_pair, monkeypatch) -> None:
    """Draws from the global RNG stay on the caller's thread, even where the host work overlaps the
    device (forced here, as on an accelerator): a compilation would rewind the worker's draws."""
    import sd4match_sdk.features.pipeline as pipeline_module
    import sd4match_sdk.matcher as matcher_module

    aheads: list[bool] = []
    real = matcher_module.prefetched
    monkeypatch.setattr(pipeline_module, "overlaps_host", lambda device: True)
    monkeypatch.setattr(matcher_module, "prefetched", lambda tasks, ahead=True: aheads.append(ahead) or real(tasks, ahead))
    src, trg = demo_pair
    pairs = [(src, trg, [[10.0, 20.0]]), (trg, src, [[30.0, 40.0]])]
    budget_matcher.match_batch(pairs)
    budget_matcher.match_batch(pairs, seed=1)
    budget_matcher.features_batch([src, trg])
    budget_matcher.features_batch([src, trg], generators=[torch.Generator().manual_seed(s) for s in (1, 2)])
    assert aheads == [False, True, False, True]
