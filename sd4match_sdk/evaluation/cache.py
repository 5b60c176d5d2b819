"""Per-image features of an evaluation, computed once and dropped after the image's last pair.

Single, Class and text prompts give an image the same features in every pair it belongs to, so
the official ``test.py`` extracts each unique image once (docs/design.md §9.4). The cache knows, from the
pairs to visit, how many pairs use each image; :meth:`FeatureCache.release` drops an image's
features after its last one, so memory stays bounded on SPair's 12k test pairs when pairs are
visited grouped by category.

An image is identified by the dataset's identifier (relative to the dataset, so the noise seeds
derived from it do not depend on where the dataset is stored), the flip and, for prompts that
depend on it, the category. With a seed, each image draws its noise from its own generator
seeded by ``(seed, "image", key)``, so results do not depend on the visiting order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.base import PairRecord
from ..matcher import ImageFeatures, Matcher
from ..noise import derive_seed
from ..prompts import PromptKind

__all__ = ["FeatureCache", "image_key", "seeded_generator"]

#: ``(image identifier, flip, category or None)``.
ImageKey = tuple[str, bool, str | None]


def seeded_generator(seed: int | None, *parts: Any) -> torch.Generator | None:
    """A CPU generator seeded with :func:`~sd4match_sdk.noise.derive_seed` of ``seed`` and labels
    (``None`` when ``seed`` is: the global RNG)."""
    if seed is None:
        return None
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


def image_key(record: PairRecord, which: int, category_matters: bool) -> ImageKey:
    """The key of a pair's source (``which=0``) or target (``which=1``) image."""
    identifier = record.source_id if which == 0 else record.target_id
    return (identifier, record.flip, record.category if category_matters else None)


class FeatureCache:
    """Features of the images of ``records``, each computed on first use.

    Args:
        matcher: computes the features (:meth:`Matcher.features`); not for CPM prompts.
        records: the pairs that will be visited (each image's use count comes from them).
        seed: seeds every image's noise; ``None`` draws from the global RNG.
    """

    def __init__(self, matcher: Matcher, records: Sequence[PairRecord], seed: int | None) -> None:
        self.matcher = matcher
        self.seed = seed
        self.category_matters = matcher.prompt_kind in (PromptKind.CLASS, PromptKind.TEXT)
        self.remaining: Counter = Counter(
            image_key(record, which, self.category_matters) for record in records for which in (0, 1)
        )
        self.features: dict[ImageKey, ImageFeatures] = {}
        #: Distinct images of the records, and how many of them had their features computed so far.
        self.num_images = len(self.remaining)
        self.computed = 0

    def __len__(self) -> int:
        return len(self.features)

    def get(self, record: PairRecord, which: int, image: np.ndarray) -> ImageFeatures:
        """The features of one image of ``record`` (``image``: as the pair's keypoints see it)."""
        key = image_key(record, which, self.category_matters)
        if key not in self.features:
            generator = seeded_generator(self.seed, "image", *key)
            self.features[key] = self.matcher.features(image, category=record.category, generator=generator)
            self.computed += 1
        return self.features[key]

    def release(self, record: PairRecord) -> None:
        """One pair of ``record``'s images is done: drop each image after its last pair."""
        for which in (0, 1):
            key = image_key(record, which, self.category_matters)
            self.remaining[key] -= 1
            if self.remaining[key] == 0:
                self.features.pop(key, None)
