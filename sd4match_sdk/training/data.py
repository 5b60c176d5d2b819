"""Training batches: the step-indexed data order and the per-pair tensors the trainer consumes.

The order of pairs is a function of ``(seed, epoch)`` only: epoch ``e`` visits the pairs in
``randperm(n)`` drawn from a generator seeded with ``derive_seed(seed, "order", e)``, in batches of
``batch_size`` (the last batch of an epoch may be smaller, as a DataLoader with
``drop_last=False``). Step ``s`` therefore always gets the same pairs, and a resumed run starts
its sampler at the saved step: nothing is skipped or repeated.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.base import PairDataset
from ..errors import ConfigError
from ..images import sd_pixels
from ..noise import derive_seed
from ..prompts import PromptKind
from .config import TrainConfig
from .dino_cache import dino_cache_key

__all__ = [
    "StepBatchSampler", "TrainPairs", "TrainBatch", "available_cpus", "check_splits", "collate_pairs", "loader_workers",
    "step_loader",
]  # fmt: skip


class StepBatchSampler:
    """Yields the pair indices of steps ``start_step .. total_steps - 1`` (a DataLoader ``batch_sampler``).

    Args:
        num_pairs: pairs in the training split.
        batch_size: pairs per step.
        seed: the run's seed.
        start_step: first step to yield (the resumed step).
        total_steps: one past the last step.
    """

    def __init__(self, num_pairs: int, batch_size: int, seed: int, start_step: int, total_steps: int) -> None:
        self.num_pairs = num_pairs
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.steps_per_epoch = max(1, -(-num_pairs // batch_size))

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(self.num_pairs, generator=generator).tolist()

    def batch(self, step: int) -> list[int]:
        """The pair indices of ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[position * self.batch_size : (position + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, order = -1, []
        for step in range(self.start_step, self.total_steps):
            e, position = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, order = e, self.epoch_order(e)
            yield order[position * self.batch_size : (position + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


@dataclass
class TrainBatch:
    """P pairs, images interleaved ``[src0, trg0, src1, trg1, ...]``.

    Attributes:
        pixels: ``(2P, 3, S, S)`` float32 in [-1, 1], mirrored for flipped pairs.
        kps0, kps1: P tensors ``(N_p, 2)`` of frame keypoints (source, target).
        categories: P category names.
        dino_keys: 2P DINOv2 cache keys (image path and flip), interleaved like ``pixels``.
        images: 2P oriented uint8 images for DINOv2 (empty unless requested).
        indices: the P dataset indices.
    """

    pixels: Tensor
    kps0: list[Tensor]
    kps1: list[Tensor]
    categories: list[str]
    dino_keys: list[str]
    images: list[np.ndarray]
    indices: list[int]

    def __len__(self) -> int:
        return len(self.categories)


class TrainPairs:
    """Map-style dataset over a benchmark split giving the per-pair training tensors.

    The SD input is the official one: PIL bilinear resize of the stored image to ``S x S``, then
    mirrored for flipped pairs (the official loader flips the resized tensor).

    Args:
        dataset: the split (its ``frame`` must equal ``image_size``).
        image_size: side of the SD input.
        with_images: also return the oriented uint8 images (for DINOv2).
    """

    def __init__(self, dataset: PairDataset, image_size: int, with_images: bool = False) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.with_images = with_images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        pixels = []
        for image in (sample.source_image, sample.target_image):
            p = sd_pixels(image, self.image_size)[0]
            pixels.append(p.flip(-1) if sample.flip else p)
        record = sample.record
        return {
            "pixels": torch.stack(pixels),
            "kps0": torch.from_numpy(sample.source_kps).float(),
            "kps1": torch.from_numpy(sample.target_kps).float(),
            "category": sample.category,
            "dino_keys": [dino_cache_key(record.source_path, record.flip), dino_cache_key(record.target_path, record.flip)],
            "images": list(sample.oriented_images()) if self.with_images else [],
            "index": index,
        }


def collate_pairs(items: list[dict]) -> TrainBatch:
    """Stack per-pair items into a :class:`TrainBatch`."""
    return TrainBatch(
        pixels=torch.cat([it["pixels"] for it in items]),
        kps0=[it["kps0"] for it in items],
        kps1=[it["kps1"] for it in items],
        categories=[it["category"] for it in items],
        dino_keys=[k for it in items for k in it["dino_keys"]],
        images=[img for it in items for img in it["images"]],
        indices=[it["index"] for it in items],
    )


def check_splits(config: TrainConfig, train_set: PairDataset, val_set: PairDataset | None) -> None:
    """Refuse splits in another frame than ``image_size``, and a Class prompt asked to validate on
    categories it never trains.

    Raises:
        ConfigError: what is wrong and how to fix it.
    """
    for name, split in (("train", train_set), ("val", val_set)):
        if split is not None and split.frame != config.image_size:
            raise ConfigError(f"the {name} split uses a {split.frame} px frame but image_size is {config.image_size}")
    if config.prompt is PromptKind.CLASS and val_set is not None:
        unseen = sorted(set(val_set.categories) - set(train_set.categories))
        if unseen:
            raise ConfigError(
                f"the val split has categories the training split lacks ({', '.join(unseen)}); "
                "a Class prompt only learns the training categories"
            )


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int, cpus: int | None = None) -> int:
    """The DataLoader workers of ``num_workers = requested``: itself when >= 0; for -1 (auto), 0 on
    2 CPUs or fewer (measured: 4 workers on 2 cores made a step 3.5x slower than none), else
    ``min(4, cpus - 1)``, leaving one CPU to the training loop."""
    if requested >= 0:
        return requested
    cpus = cpus or available_cpus()
    return 0 if cpus <= 2 else min(4, cpus - 1)


def step_loader(
    train_set: PairDataset, config: TrainConfig, start_step: int, total_steps: int, with_images: bool, pin_memory: bool
) -> Iterator[TrainBatch]:
    """The batches of steps ``start_step .. total_steps - 1``, decoded by :func:`loader_workers` workers.

    torch warns twice (at construction and at iteration) when the workers outnumber the CPUs; the
    training command's start line states the workers and the CPUs once instead.
    """
    sampler = StepBatchSampler(len(train_set), config.batch_size, config.seed, start_step, total_steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        loader = DataLoader(
            TrainPairs(train_set, config.image_size, with_images=with_images),
            batch_sampler=sampler,
            collate_fn=collate_pairs,
            num_workers=loader_workers(config.num_workers),
            pin_memory=pin_memory,
        )
        return iter(loader)
