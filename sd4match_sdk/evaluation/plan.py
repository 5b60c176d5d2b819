"""What an evaluation computes, in which batches, and which process does what (docs/design.md §9.5).

The plan is a function of the dataset, the prompt kind, ``max_pairs`` and the batch size, never
of the number of processes, so every process count runs the same batches and gets bitwise the
same features:

1. **Pairs**: all pairs, or ``max_pairs`` of them spread over the categories, grouped by
   category (stable within one): the visiting order, whose positions name the pairs below.
2. **Units**: Single/Class/text prompts give an image the same features in all its pairs, so a
   unit is a unique image (identifier, flip and, when the prompt depends on it, the category), in
   the order of first use. A CPM prompt conditions both images on the pair, so a unit is a pair.
3. **Batches**: consecutive units, ``batch_size`` per UNet batch.
4. **Rounds** (:meth:`EvalPlan.schedule`): with W processes, round k runs batches
   ``kW .. kW + W - 1``, batch ``kW + r`` on rank r. For images, every rank then holds the
   round's features (they are exchanged), and each pair whose second image arrived in round k is
   matched in round k, the round's pairs dealt to the ranks in turn; an image's features are
   dropped after the round of its last pair. For CPM, a rank matches the pairs it computed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..data.base import PairDataset, PairRecord
from ..errors import ConfigError
from ..prompts import PromptKind

__all__ = ["EvalPlan", "ImageKey", "ImageUnit", "Round", "build_plan", "image_key", "visiting_order"]

#: ``(image identifier, flip, category or None)``.
ImageKey = tuple[str, bool, str | None]


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


def image_key(record: PairRecord, which: int, category_matters: bool) -> ImageKey:
    """The key of a pair's source (``which=0``) or target (``which=1``) image.

    The identifier is relative to the dataset, so the noise seeded from the key does not depend
    on where the dataset is stored.
    """
    identifier = record.source_id if which == 0 else record.target_id
    return (identifier, record.flip, record.category if category_matters else None)


@dataclass(frozen=True)
class ImageUnit:
    """One unique image of a Single/Class/text evaluation.

    Attributes:
        key: its :func:`image_key` (seeds its noise).
        path: the image file.
        flip: mirror it (what the frame keypoints refer to).
        category: the category its prompt is built for (that of its first pair).
    """

    key: ImageKey
    path: Path
    flip: bool
    category: str


@dataclass(frozen=True)
class Round:
    """One step of the schedule, the same on every rank.

    Attributes:
        batches: per rank, the batch it computes (``None``: none in this round).
        matches: per rank, the visiting positions of the pairs it matches.
        release: image units whose last pair is matched in this round (Single/Class).
    """

    batches: tuple[int | None, ...]
    matches: tuple[tuple[int, ...], ...]
    release: tuple[int, ...]

    @property
    def num_pairs(self) -> int:
        """Pairs matched in this round, all ranks together."""
        return sum(len(m) for m in self.matches)


@dataclass(frozen=True)
class EvalPlan:
    """The pairs, units and fixed batches of one evaluation (see the module docstring).

    Attributes:
        order: dataset indices in visiting order.
        per_pair: units are pairs (CPM) rather than images.
        batch_size: units per batch.
        images: the unique images (Single/Class/text; empty for CPM).
        pair_images: per visiting position, the units of its source and target images (empty for CPM).
    """

    order: tuple[int, ...]
    per_pair: bool
    batch_size: int
    images: tuple[ImageUnit, ...] = ()
    pair_images: tuple[tuple[int, int], ...] = ()

    @property
    def num_units(self) -> int:
        return len(self.order) if self.per_pair else len(self.images)

    @property
    def num_images(self) -> int:
        """Images whose features the plan computes (its cost): unique images, or two per CPM pair."""
        return 2 * len(self.order) if self.per_pair else len(self.images)

    def round_images(self, round_: Round) -> int:
        """Images whose features ``round_`` computes, all ranks together."""
        factor = 2 if self.per_pair else 1
        return factor * sum(len(self.batch(b)) for b in round_.batches if b is not None)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_units / self.batch_size)

    def batch(self, index: int) -> range:
        """The units of batch ``index`` (image units, or visiting positions for CPM)."""
        return range(index * self.batch_size, min((index + 1) * self.batch_size, self.num_units))

    def schedule(self, world_size: int) -> list[Round]:
        """The rounds of a run on ``world_size`` processes."""
        rounds = math.ceil(self.num_batches / world_size)
        batches = [tuple(b if b < self.num_batches else None for b in range(k * world_size, (k + 1) * world_size))
                   for k in range(rounds)]  # fmt: skip
        if self.per_pair:
            return [Round(bs, tuple(() if b is None else tuple(self.batch(b)) for b in bs), ()) for bs in batches]
        ready = [max(u0, u1) // self.batch_size // world_size for u0, u1 in self.pair_images]
        last_round = [0] * len(self.images)
        for position, (u0, u1) in enumerate(self.pair_images):
            last_round[u0] = max(last_round[u0], ready[position])
            last_round[u1] = max(last_round[u1], ready[position])
        pairs_of: list[list[int]] = [[] for _ in batches]
        for position, r in enumerate(ready):
            pairs_of[r].append(position)
        release_of: list[list[int]] = [[] for _ in batches]
        for unit, r in enumerate(last_round):
            release_of[r].append(unit)
        return [
            Round(bs, tuple(tuple(pairs[rank::world_size]) for rank in range(world_size)), tuple(release))
            for bs, pairs, release in zip(batches, pairs_of, release_of)
        ]


def build_plan(dataset: PairDataset, prompt_kind: PromptKind, max_pairs: int | None = None, batch_size: int = 1) -> EvalPlan:
    """The plan of evaluating ``dataset`` with a prompt of ``prompt_kind``.

    Raises:
        ConfigError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
    order = tuple(visiting_order(dataset, max_pairs))
    if prompt_kind is PromptKind.CPM:
        return EvalPlan(order, per_pair=True, batch_size=batch_size)
    category_matters = prompt_kind in (PromptKind.CLASS, PromptKind.TEXT)
    units: dict[ImageKey, int] = {}
    images: list[ImageUnit] = []
    pair_images = []
    for index in order:
        record = dataset.records[index]
        pair = []
        for which, path in ((0, record.source_path), (1, record.target_path)):
            key = image_key(record, which, category_matters)
            if key not in units:
                units[key] = len(images)
                images.append(ImageUnit(key, Path(path), record.flip, record.category))
            pair.append(units[key])
        pair_images.append((pair[0], pair[1]))
    return EvalPlan(order, per_pair=False, batch_size=batch_size, images=tuple(images), pair_images=tuple(pair_images))
