"""PCK evaluation of a :class:`~sd4match_sdk.Matcher` on a benchmark split (docs/design.md §9).

Single, Class and text prompts: the features of each image are computed once and reused by all
its pairs (:class:`~.cache.FeatureCache`, :meth:`Matcher.match_features`), as the official
``test.py``. Pairs are visited grouped by category, so an image's features can be dropped after
its last pair. CPM prompts depend on both images, so every pair runs :meth:`Matcher.match`.

Coordinates: the dataset gives keypoints in the square model frame (clamped as the official
loaders); they go to the Matcher in original pixels (``x * W / frame``, inside the image) and the
matches come back to the frame, where PCK is measured against the frame threshold.

Randomness: with a seed, every image (Single/Class) or pair (CPM) draws its noise from its own
generator seeded by ``(seed, image identifier or pair name)``, so results depend neither on the
visiting order nor on where the dataset is stored.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.base import PairDataset, PairSample, read_rgb
from ..matcher import Matcher, MatchResult
from ..ops.geometry import frame_to_pixels, pixels_to_frame
from ..ops.pck import DEFAULT_ALPHAS, PCKAccumulator, PCKSummary
from ..prompts import PromptKind
from .cache import FeatureCache, seeded_generator

__all__ = ["PCK_UNIT", "EvalResult", "evaluate", "visiting_order"]

#: How the JSON results store PCK (the printed tables show percent, as the paper).
PCK_UNIT = "fraction of a pair's keypoints, 0-1 (printed tables: percent)"


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        summary: PCK per alpha, overall and per category.
        pairs: per pair ``{"name", "category", "num_keypoints", "pck": {alpha: fraction}}``.
        seconds: wall time of the evaluation.
        settings: what was evaluated (dataset, split, prompt kind, timestep, ...).
    """

    summary: PCKSummary
    pairs: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "pck_unit": PCK_UNIT,
            **self.summary.to_dict(),
            "seconds": self.seconds,
            "pairs_per_second": (self.summary.num_pairs / self.seconds) if self.seconds > 0 else None,
            "pairs": self.pairs,
        }


def evaluate(
    matcher: Matcher,
    dataset: PairDataset,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int | None = 0,
    max_pairs: int | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "eval",
) -> EvalResult:
    """PCK of ``matcher`` on ``dataset`` (frame = ``dataset.frame``, which should be the matcher's image size).

    Args:
        matcher: the matcher (its prompt, timestep, ensemble and match method are used as they are).
        dataset: a benchmark split.
        alphas: PCK tolerance factors.
        seed: seeds every image's (or pair's) noise; ``None`` draws from the global RNG.
        max_pairs: evaluate only N pairs, spread over the categories (:func:`visiting_order`).
        progress: show a progress bar; it counts images whose features are computed (the cost),
            with the pairs done beside it.
        autocast_dtype: run the feature extraction under CUDA autocast with this dtype (the
            official validation uses fp16 autocast over fp32 weights); ignored on the CPU.
        desc: progress bar label.
    """
    # 1. Choose the pairs and the order they are visited in
    order = visiting_order(dataset, max_pairs)
    # 2. Prepare the per-image feature cache (not for CPM) and the PCK accumulator
    per_pair = matcher.prompt_kind is PromptKind.CPM
    cache = None if per_pair else FeatureCache(matcher, [dataset.records[i] for i in order], seed)
    accumulator = PCKAccumulator(alphas)
    # 3. Match and score every pair; the bar counts feature extractions, which cost the time
    pairs = []
    bar = _progress(2 * len(order) if cache is None else cache.num_images, desc, progress)
    start = time.perf_counter()
    for done, index in enumerate(order, start=1):
        sample = _load_sample(dataset, index)
        with _autocast(matcher.device.type, autocast_dtype):
            result = _match_pair(matcher, sample, cache, seed)
        pairs.append(_score_pair(accumulator, sample, result))
        if cache is not None:
            cache.release(sample.record)
        bar.set_postfix_str(f"{done}/{len(order)} pairs", refresh=False)
        bar.update((2 * done if cache is None else cache.computed) - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    # 4. Summarise
    return EvalResult(accumulator.summary(), pairs, seconds, _settings(matcher, dataset, seed, len(order)))


def visiting_order(dataset: PairDataset, max_pairs: int | None = None) -> list[int]:
    """The pairs to evaluate, grouped by category (dataset order within one).

    All pairs when ``max_pairs`` is ``None``; else ``max_pairs`` pairs spread over the categories:
    the sorted categories take turns, each giving its next pair in dataset order, so a subset
    covers as many categories as it can (a deterministic choice; the first rows of a pair list
    are often a single category).
    """
    records = dataset.records
    chosen: list[int] = list(range(len(records)))
    if max_pairs and max_pairs < len(records):
        by_category: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(records):
            by_category[record.category].append(i)
        queues = [by_category[c] for c in sorted(by_category)]
        chosen = [q[turn] for turn in range(max(map(len, queues))) for q in queues if turn < len(q)][:max_pairs]
    return sorted(chosen, key=lambda i: (records[i].category, i))


def _load_sample(dataset: PairDataset, index: int) -> PairSample:
    """Decode a pair's images (once, when both are the same file) and map its keypoints to the frame."""
    record = dataset.records[index]
    source = read_rgb(record.source_path)
    target = source if record.target_path == record.source_path else read_rgb(record.target_path)
    return dataset.sample(index, source, target)


def _match_pair(matcher: Matcher, sample: PairSample, cache: FeatureCache | None, seed: int | None) -> MatchResult:
    """The matches of the source keypoints, in the target image's pixels."""
    record = sample.record
    image0, image1 = sample.oriented_images()
    query = frame_to_pixels(torch.from_numpy(sample.source_kps).float(), sample.source_size, sample.frame)
    if cache is None:
        generator = seeded_generator(seed, "pair", record.name, sample.index)
        return matcher.match(image0, image1, query, generator=generator)
    return matcher.match_features(cache.get(record, 0, image0), cache.get(record, 1, image1), query)


def _score_pair(accumulator: PCKAccumulator, sample: PairSample, result: MatchResult) -> dict[str, Any]:
    """PCK of one pair in the frame, added to ``accumulator``; the pair's JSON record."""
    pred = pixels_to_frame(torch.from_numpy(result.points).double(), sample.target_size, sample.frame).numpy()
    scores = accumulator.add(pred, sample.target_kps, sample.threshold, sample.category)
    record = sample.record
    return {
        "index": sample.index,
        "name": record.name,
        "category": record.category,
        "num_keypoints": record.num_keypoints,
        "pck": {f"{a:g}": float(s) for a, s in zip(accumulator.alphas, scores)},
    }


def _settings(matcher: Matcher, dataset: PairDataset, seed: int | None, num_pairs: int) -> dict[str, Any]:
    config = matcher.feature_config
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "frame": dataset.frame,
        "prompt_kind": str(matcher.prompt_kind),
        "timestep": config.timestep,
        "ensemble": config.ensemble,
        "image_size": config.image_size,
        "method": str(matcher.match_config.method),
        "sigma": matcher.match_config.sigma,
        "beta": matcher.match_config.beta,
        "seed": seed,
        "num_pairs": num_pairs,
        "pair_list": _relative(dataset.pair_list, dataset.root),
    }


def _relative(path, root) -> str | None:
    """``path`` relative to the dataset root when inside it (results do not depend on where data lives)."""
    if path is None:
        return None
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _autocast(device_type: str, dtype: torch.dtype | None):
    if dtype is None or device_type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
