"""Decoding a process's batches ahead of the model: a DataLoader whose items are whole batches (docs/design.md §9.5).

Image decoding and resizing run on the CPU while the model runs on the device. With
``workers > 0`` a :class:`torch.utils.data.DataLoader` decodes the next batches in worker
processes (``prefetch_factor`` batches each) while the current one is computed; with 0 they
are decoded in the calling process, just before use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..data.base import PairDataset, read_rgb
from .plan import EvalPlan

__all__ = ["BatchImages", "batch_loader", "oriented_image"]


def oriented_image(path: Any, flip: bool) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB, mirrored when ``flip`` (what frame keypoints refer to)."""
    image = read_rgb(path)
    return np.ascontiguousarray(image[:, ::-1]) if flip else image


class BatchImages:
    """The decoded images of the plan's batches (a map-style dataset indexed by batch).

    An item is, for image units, ``[(unit, image), ...]``; for CPM pairs,
    ``[(position, source image, target image), ...]``.
    """

    def __init__(self, dataset: PairDataset, plan: EvalPlan) -> None:
        self.dataset = dataset
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.num_batches

    def __getitem__(self, batch: int) -> list[tuple]:
        if not self.plan.per_pair:
            return [(u, oriented_image(self.plan.images[u].path, self.plan.images[u].flip)) for u in self.plan.batch(batch)]
        items = []
        for position in self.plan.batch(batch):
            record = self.dataset.records[self.plan.order[position]]
            source = oriented_image(record.source_path, record.flip)
            same = record.target_path == record.source_path
            items.append((position, source, source if same else oriented_image(record.target_path, record.flip)))
        return items


def _unchanged(item: list[tuple]) -> list[tuple]:
    return item


def batch_loader(dataset: PairDataset, plan: EvalPlan, batches: Sequence[int], workers: int = 0) -> Iterator[list[tuple]]:
    """The decoded ``batches`` of ``plan``, in that order, decoded by ``workers`` processes."""
    loader = DataLoader(
        BatchImages(dataset, plan), sampler=list(batches), batch_size=None, num_workers=workers, collate_fn=_unchanged
    )
    return iter(loader)
