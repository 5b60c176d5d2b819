"""PCK evaluation of a :class:`~sd4match_sdk.Matcher` on a benchmark split (SPEC 5).

Single, Class and text prompts: the features of each image are computed once
(:meth:`Matcher.features`) and reused by all its pairs (:meth:`Matcher.match_features`), as the
official ``test.py``. Pairs are visited grouped by category and an image's features are dropped
after its last pair, so memory stays bounded on SPair's 12k test pairs. CPM prompts depend on both
images, so every pair runs :meth:`Matcher.match`.

Coordinates: the dataset gives keypoints in the square model frame (clamped as the official
loaders); they go to the Matcher in original pixels (``x * W / frame``, inside the image) and the
matches come back to the frame, where PCK is measured against the frame threshold.

Randomness: with a seed, every image (Single/Class) or pair (CPM) draws its noise from its own
generator seeded by ``(seed, image identifier or pair name)``, so results depend neither on the
visiting order nor on where the dataset is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.base import PairDataset, PairRecord, read_rgb
from ..matcher import ImageFeatures, Matcher
from ..ops.geometry import frame_to_pixels, pixels_to_frame
from ..ops.pck import DEFAULT_ALPHAS, PCKAccumulator, PCKSummary
from ..prompts import PromptKind

__all__ = ["EvalResult", "evaluate", "derive_seed"]


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and labels, stable across runs and platforms (sha256)."""
    text = "|".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


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
            **self.summary.to_dict(),
            "seconds": self.seconds,
            "pairs_per_second": (self.summary.num_pairs / self.seconds) if self.seconds > 0 else None,
            "pairs": self.pairs,
        }


def _image_key(record: PairRecord, which: int, category_matters: bool) -> tuple:
    """Identifies an image's features: the dataset's image identifier (relative to the dataset,
    so the derived noise seeds do not depend on where the dataset lives), the flip and, for
    prompts that depend on it, the category."""
    identifier = record.source_id if which == 0 else record.target_id
    return (identifier, record.flip, record.category if category_matters else None)


def _autocast(device_type: str, dtype: torch.dtype | None):
    if dtype is None or device_type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


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
        max_pairs: evaluate only the first N pairs (in dataset order).
        progress: show a progress bar with pairs/s.
        autocast_dtype: run the feature extraction under CUDA autocast with this dtype (the
            official validation uses fp16 autocast over fp32 weights); ignored on the CPU.
        desc: progress bar label.
    """
    count = len(dataset) if not max_pairs else min(max_pairs, len(dataset))
    per_pair_cpm = matcher.prompt_kind is PromptKind.CPM
    category_matters = matcher.prompt_kind in (PromptKind.CLASS, PromptKind.TEXT)
    # Group by category so an image's features can be dropped after its last pair.
    order = sorted(range(count), key=lambda i: (dataset.records[i].category, i))
    remaining: Counter = Counter()
    if not per_pair_cpm:
        for i in order:
            for which in (0, 1):
                remaining[_image_key(dataset.records[i], which, category_matters)] += 1
    cache: dict[tuple, ImageFeatures] = {}
    images: dict[str, np.ndarray] = {}
    device_type = getattr(getattr(matcher.backend, "device", None), "type", "cpu")
    accumulator = PCKAccumulator(alphas)
    pairs: list[dict] = []
    bar = _progress(count, desc, progress)
    start = time.perf_counter()
    for i in order:
        record = dataset.records[i]
        sample = dataset.sample(i, _read(images, record.source_path), _read(images, record.target_path))
        image0, image1 = sample.oriented_images()
        query = frame_to_pixels(torch.from_numpy(sample.source_kps).float(), sample.source_size, sample.frame)
        with _autocast(device_type, autocast_dtype):
            if per_pair_cpm:
                generator = _generator(seed, "pair", record.name, i)
                result = matcher.match(image0, image1, query, generator=generator)
            else:
                feats = [
                    _features(matcher, cache, _image_key(record, w, category_matters), img, record.category, seed)
                    for w, img in ((0, image0), (1, image1))
                ]
                result = matcher.match_features(feats[0], feats[1], query)
        pred = pixels_to_frame(torch.from_numpy(result.points).double(), sample.target_size, sample.frame).numpy()
        scores = accumulator.add(pred, sample.target_kps, sample.threshold, sample.category)
        pairs.append(
            {
                "index": i,
                "name": record.name,
                "category": record.category,
                "num_keypoints": record.num_keypoints,
                "pck": {f"{a:g}": float(s) for a, s in zip(accumulator.alphas, scores)},
            }
        )
        if not per_pair_cpm:
            for which in (0, 1):
                key = _image_key(record, which, category_matters)
                remaining[key] -= 1
                if remaining[key] == 0:
                    cache.pop(key, None)
        images.clear()
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    config = matcher.feature_config
    settings = {
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
        "num_pairs": count,
    }
    return EvalResult(accumulator.summary(), pairs, seconds, settings)


def _read(images: dict[str, np.ndarray], path) -> np.ndarray:
    key = str(path)
    if key not in images:
        images[key] = read_rgb(path)
    return images[key]


def _generator(seed: int | None, *parts: Any) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


def _features(
    matcher: Matcher, cache: dict, key: tuple, image: np.ndarray, category: str, seed: int | None
) -> ImageFeatures:
    if key not in cache:
        cache[key] = matcher.features(image, category=category, generator=_generator(seed, "image", *key))
    return cache[key]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pairs", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
