"""What an evaluation keeps per image: a seeded noise generator, and for CPM prompts the DINOv2 tokens.

Every image (Single/Class/text) or pair (CPM) draws its noise from its own generator seeded by
``(seed, "image", key)`` or ``(seed, "pair", name, index)`` (docs/design.md §7.2), so results depend
neither on the visiting order nor on the batches or the process that computes them.

DINOv2 is frozen, so the CPM input of an image is the same in all its pairs: :class:`DinoTokens`
computes it once per image on a process and drops it after that process's last pair using it.
Tokens are computed one image per DINOv2 call, so they do not depend on which images share a
batch, and therefore not on the number of processes (docs/design.md §9.5).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..noise import derive_seed

__all__ = ["DinoTokens", "seeded_generator"]


def seeded_generator(seed: int | None, *parts: Any) -> torch.Generator | None:
    """A CPU generator seeded with :func:`~sd4match_sdk.noise.derive_seed` of ``seed`` and labels
    (``None`` when ``seed`` is: the global RNG)."""
    if seed is None:
        return None
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


class DinoTokens:
    """``(256, D)`` DINOv2 tokens by image key, each computed on first use.

    Args:
        backend: a feature backend with ``dino_tokens(images)`` (the PyTorch backend of a CPM prompt).
        uses: one key per use (two per pair this process evaluates); a key's tokens are dropped
            after its last use.
    """

    def __init__(self, backend: Any, uses: Iterable[Any]) -> None:
        self.backend = backend
        self.remaining = Counter(uses)
        self.tokens: dict[Any, Tensor] = {}
        self.computed = 0  # DINOv2 calls (one image each)

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, keys: list[Any], images: list[np.ndarray]) -> Tensor:
        """``(B, 256, D)`` tokens of ``images`` (keyed by ``keys``), counting one use of each."""
        rows = []
        for key, image in zip(keys, images):
            if key not in self.tokens:
                self.tokens[key] = self.backend.dino_tokens([image])[0]
                self.computed += 1
            rows.append(self.tokens[key])
            self.remaining[key] -= 1
            if self.remaining[key] <= 0:
                del self.tokens[key]
        return torch.stack(rows)
