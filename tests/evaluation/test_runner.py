"""The evaluation runner: a known answer with a mirror matcher, features once per image, CPM per pair, seeds (docs/design.md §9.4, §7.2)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from sd4match_sdk.config import FeatureConfig, MatchConfig
from sd4match_sdk.data import PFWillowDataset, SPairDataset
from sd4match_sdk.evaluation import evaluate
from sd4match_sdk.evaluation.runner import visiting_order
from sd4match_sdk.prompts import PromptKind


@dataclass
class _Features:
    features: torch.Tensor
    size: tuple[int, int]
    category: str | None = None


@dataclass
class _Result:
    points: np.ndarray


class _PairBackend:
    """Counts the pair batches a CPM evaluation runs (one zero feature cell per image)."""

    name = "mirror"

    def __init__(self) -> None:
        self.pair_batches: list[int] = []

    def extract_pairs(self, sources, targets, categories, noises):
        self.pair_batches.append(len(sources))
        return torch.zeros(2 * len(sources), 1, 1, 1)


class MirrorMatcher:
    """Predicts, for a query at source pixel q, the target pixel ``q * size1 / size0``: the source
    keypoint's frame position. PCK is then a function of the annotations alone."""

    def __init__(self, kind: PromptKind = PromptKind.SINGLE) -> None:
        self.prompt_kind = kind
        self.feature_config = FeatureConfig(image_size=768, timestep=50, ensemble=8)
        self.match_config = MatchConfig()
        self.device = torch.device("cpu")
        self.backend = _PairBackend()
        self.feature_calls: list[tuple] = []

    def features_batch(self, images, categories=None, seed=None, generators=None):
        self.feature_calls += [(image.shape, category) for image, category in zip(images, categories)]
        return [_Features(torch.zeros(1, 1, 1, 1), (image.shape[1], image.shape[0]), c) for image, c in zip(images, categories)]

    def draw_pair_noise(self, seed=None, generator=None):
        return None, None

    def match_features(self, source, target, points):
        scale = np.array(target.size, np.float64) / np.array(source.size, np.float64)
        return _Result(np.asarray(points, np.float64) * scale)


def expected_pck(dataset, alpha: float) -> tuple[float, dict[str, float]]:
    """By hand: frame source keypoints as predictions, distance to the frame target keypoints."""
    scores, cats = [], []
    for sample in dataset:
        dist = np.linalg.norm(sample.source_kps - sample.target_kps, axis=1)
        scores.append(np.mean(dist <= alpha * sample.threshold))
        cats.append(sample.category)
    per_cat = {c: float(np.mean([s for s, k in zip(scores, cats) if k == c])) for c in set(cats)}
    return float(np.mean(scores)), per_cat


def test_runner_known_answer_and_features_once_per_image(spair_root):
    dataset = SPairDataset(spair_root, "test")
    matcher = MirrorMatcher()
    result = evaluate(matcher, dataset, alphas=(0.1, 0.5), progress=False)
    for alpha in (0.1, 0.5):
        overall, per_cat = expected_pck(dataset, alpha)
        assert result.summary.overall[alpha] == pytest.approx(overall, abs=1e-12)
        assert result.summary.per_category[alpha] == pytest.approx(per_cat, abs=1e-12)
    assert result.summary.overall[0.5] > 0  # the test is not vacuous
    assert len(matcher.feature_calls) == 8  # 4 pairs, 8 distinct images: one extraction each


def test_runner_reuses_an_image_across_pairs(pfwillow_root):
    dataset = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv")
    matcher = MirrorMatcher()
    result = evaluate(matcher, dataset, alphas=(0.1,), max_pairs=60, progress=False)
    chosen = visiting_order(dataset, 60)
    images = {str(p) for i in chosen for p in (dataset.records[i].source_path, dataset.records[i].target_path)}
    assert len(matcher.feature_calls) == len(images) < 120
    assert result.summary.num_pairs == 60
    overall, _ = expected_pck([dataset[i] for i in chosen], 0.1)
    assert result.summary.overall[0.1] == pytest.approx(overall, abs=1e-12)


def test_max_pairs_spreads_over_the_categories(pfwillow_root):
    dataset = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv")
    assert {dataset.records[i].category for i in range(12)} == {"car(G)"}  # the list's first rows: one category
    chosen = visiting_order(dataset, 12)
    counts = Counter(dataset.records[i].category for i in chosen)
    assert len(counts) == 10 and sorted(counts.values()) == [1] * 8 + [2] * 2
    first = {c: min(i for i, r in enumerate(dataset.records) if r.category == c) for c in counts}
    assert all(first[dataset.records[i].category] == i for i in chosen if counts[dataset.records[i].category] == 1)
    assert chosen == visiting_order(dataset, 12)  # deterministic
    assert [dataset.records[i].category for i in chosen] == sorted(dataset.records[i].category for i in chosen)
    assert visiting_order(dataset, 5000) == visiting_order(dataset)  # more than there are: all of them


def test_runner_cpm_runs_per_pair(spair_root):
    dataset = SPairDataset(spair_root, "test")
    matcher = MirrorMatcher(PromptKind.CPM)
    result = evaluate(matcher, dataset, alphas=(0.1,), progress=False)
    assert matcher.backend.pair_batches == [1, 1, 1, 1] and not matcher.feature_calls
    assert result.summary.overall[0.1] == pytest.approx(expected_pck(dataset, 0.1)[0], abs=1e-12)


def test_evaluation_with_a_seed_is_reproducible_wherever_the_data_lives(tiny_sd, spair_root, tmp_path):
    import shutil

    from sd4match_sdk import Matcher

    matcher = Matcher.from_pretrained(str(tiny_sd), image_size=256, ensemble=1, method="nn")
    moved = shutil.copytree(spair_root, tmp_path / "elsewhere" / "SPair-71k")
    a = evaluate(matcher, SPairDataset(spair_root, "test", frame=256), seed=3, max_pairs=2, progress=False)
    b = evaluate(matcher, SPairDataset(moved, "test", frame=256), seed=3, max_pairs=2, progress=False)
    assert [p["pck"] for p in a.pairs] == [p["pck"] for p in b.pairs]
    features = [matcher.features(SPairDataset(root, "test", frame=256)[0].source_image, generator=g).features
                for root, g in ((spair_root, None), (moved, None))]  # fmt: skip
    assert not torch.equal(*features)  # without a seed the noise differs: the seed above did the work


def test_batched_images_give_the_matches_of_one_at_a_time(matcher256, pfwillow_root, monkeypatch):
    dataset = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv", frame=256)
    dataset.records = dataset.records[:10]  # one category, whose pairs share images
    single = evaluate(matcher256, dataset, alphas=(0.1, 0.5), seed=4, max_pairs=10, progress=False)
    batches = []
    extract = matcher256.backend.extract_prepared
    monkeypatch.setattr(matcher256.backend, "extract_prepared", lambda prepared: batches.append(len(prepared.images.pixels)) or extract(prepared))
    batched = evaluate(matcher256, dataset, alphas=(0.1, 0.5), seed=4, max_pairs=10, progress=False, batch_size=4, workers=1)
    images = {str(p) for r in dataset.records[:10] for p in (r.source_path, r.target_path)}
    assert max(batches) == 4 and sum(batches) == len(images) < 20  # batches of 4, each unique image once
    assert [p["pck"] for p in batched.pairs] == [p["pck"] for p in single.pairs]
    assert batched.summary.overall == single.summary.overall
    for a, b in zip(single.pairs, batched.pairs):  # a batched UNet rounds differently: ~1e-4 px here
        np.testing.assert_allclose(a["pred_kps"], b["pred_kps"], atol=1e-2)


def test_cpm_computes_each_image_tokens_once_and_equals_match(tiny_sd, tiny_dino, cpm_prompt_file, pfwillow_root, monkeypatch):
    from sd4match_sdk import Matcher
    from sd4match_sdk.evaluation.cache import seeded_generator
    from sd4match_sdk.ops.geometry import frame_to_pixels, pixels_to_frame

    matcher = Matcher.from_pretrained(str(tiny_sd), prompt=str(cpm_prompt_file), dino=str(tiny_dino), image_size=256, ensemble=1)
    dataset = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv", frame=256)
    dataset.records = dataset.records[:6]  # one category, whose pairs share images
    calls = []
    tokens = matcher.backend.dino_tokens
    monkeypatch.setattr(matcher.backend, "dino_tokens", lambda images: calls.append(len(images)) or tokens(images))
    result = evaluate(matcher, dataset, alphas=(0.1,), seed=2, max_pairs=6, progress=False, batch_size=3)
    images = {str(p) for r in dataset.records[:6] for p in (r.source_path, r.target_path)}
    assert calls == [1] * len(images) and len(images) < 12  # one DINOv2 call per image, shared by its pairs
    for entry in result.pairs[:2]:  # the same matches as one match() per pair with the pair's seed
        sample = dataset[entry["index"]]
        query = frame_to_pixels(torch.from_numpy(sample.source_kps).float(), sample.source_size, 256)
        generator = seeded_generator(2, "pair", sample.record.name, sample.index)
        alone = matcher.match(sample.source_image, sample.target_image, query, generator=generator)
        expected = pixels_to_frame(torch.from_numpy(alone.points).double(), sample.target_size, 256).numpy()
        np.testing.assert_allclose(entry["pred_kps"], expected, atol=1e-2)
