"""Training batches: the step-indexed data order, each process's share of a step, and the tensors the trainer consumes.

The order of pairs is a function of ``(seed, epoch)`` only: epoch ``e`` visits the pairs in
``randperm(n)`` drawn from a generator seeded with ``derive_seed(seed, "order", e)``, in batches of
``batch_size`` (the last batch of an epoch may be smaller, as a DataLoader with
``drop_last=False``). Step ``s`` therefore always gets the same pairs, and a resumed run starts
its loader at the saved step: nothing is skipped or repeated.

With several processes (docs/design.md §8.8) the step's pairs are split into contiguous blocks,
one per rank (:func:`~sd4match_sdk.distributed.shard_range`); a pair keeps its position in the
step, which seeds its noise, so the split changes nothing but who computes what.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.base import PairDataset
from ..data.workers import loader_workers
from ..distributed import shard_range
from ..errors import ConfigError
from ..images import sd_pixels
from ..noise import derive_seed
from ..prompts import PromptKind
from .config import TrainConfig
from .dino_cache import dino_cache_key

__all__ = [
    "pair_generator", "StepOrder", "StepShards", "TrainPairs", "TrainBatch", "check_splits",
    "collate_pairs", "step_loader",
]  # fmt: skip


def pair_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The CPU generator of one pair's training noise: seeded by the run's seed, the step and the
    pair's position in the step, so the noise does not depend on the number of processes or the
    micro-batch size (docs/design.md §8.8)."""
    return torch.Generator().manual_seed(derive_seed(seed, "train-noise", step, position))


class StepOrder:
    """The pair indices of every step: epoch ``e`` is ``randperm`` seeded by ``(seed, "order", e)``.

    Args:
        num_pairs: pairs in the training split.
        batch_size: pairs per step.
        seed: the run's seed.
    """

    def __init__(self, num_pairs: int, batch_size: int, seed: int) -> None:
        self.num_pairs = num_pairs
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = max(1, -(-num_pairs // batch_size))
        self._epoch: tuple[int, list[int]] = (-1, [])

    def epoch_order(self, epoch: int) -> list[int]:
        if self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self._epoch = (epoch, torch.randperm(self.num_pairs, generator=generator).tolist())
        return self._epoch[1]

    def batch(self, step: int) -> list[int]:
        """The pair indices of ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        return self.epoch_order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]


@dataclass
class TrainBatch:
    """One process's share of a step: P pairs, images interleaved ``[src0, trg0, src1, trg1, ...]``.

    Attributes:
        pixels: ``(2P, 3, S, S)`` float32 in [-1, 1], mirrored for flipped pairs.
        kps0, kps1: P tensors ``(N_p, 2)`` of frame keypoints (source, target).
        categories: P category names.
        dino_keys: 2P DINOv2 cache keys (image path and flip), interleaved like ``pixels``.
        indices: the P dataset indices.
        positions: the P pairs' positions in the step (they seed the pairs' noise).
        step_pairs: pairs in the whole step, all processes together (the loss divides by it).
    """

    pixels: Tensor
    kps0: list[Tensor]
    kps1: list[Tensor]
    categories: list[str]
    dino_keys: list[str]
    indices: list[int]
    positions: list[int]
    step_pairs: int

    def __len__(self) -> int:
        return len(self.categories)

    def pin_memory(self) -> TrainBatch:
        """The batch with its pixels in page-locked memory (DataLoader ``pin_memory``)."""
        return dataclasses.replace(self, pixels=self.pixels.pin_memory())


class TrainPairs:
    """Map-style dataset over a benchmark split giving the per-pair training tensors.

    The SD input is the official one: PIL bilinear resize of the stored image to ``S x S``, then
    mirrored for flipped pairs (the official loader flips the resized tensor).

    Args:
        dataset: the split (its ``frame`` must equal ``image_size``).
        image_size: side of the SD input.
    """

    def __init__(self, dataset: PairDataset, image_size: int) -> None:
        self.dataset = dataset
        self.image_size = image_size

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
            "index": index,
        }


def collate_pairs(items: list[dict], positions: Sequence[int] | None = None, step_pairs: int | None = None) -> TrainBatch:
    """Stack per-pair items into a :class:`TrainBatch` (default: the whole step, positions ``0 .. P-1``)."""
    return TrainBatch(
        pixels=torch.cat([it["pixels"] for it in items]) if items else torch.zeros(0, 3, 0, 0),
        kps0=[it["kps0"] for it in items],
        kps1=[it["kps1"] for it in items],
        categories=[it["category"] for it in items],
        dino_keys=[k for it in items for k in it["dino_keys"]],
        indices=[it["index"] for it in items],
        positions=list(range(len(items))) if positions is None else list(positions),
        step_pairs=len(items) if step_pairs is None else step_pairs,
    )


class StepShards:
    """Rank ``rank``'s share of every step (a map-style dataset indexed by step).

    Args:
        pairs: the per-pair tensors.
        order: the step order.
        rank, world_size: this process and the number of processes.
    """

    def __init__(self, pairs: TrainPairs, order: StepOrder, rank: int = 0, world_size: int = 1) -> None:
        self.pairs, self.order = pairs, order
        self.rank, self.world_size = rank, world_size

    def __getitem__(self, step: int) -> TrainBatch:
        indices = self.order.batch(step)
        positions = shard_range(len(indices), self.rank, self.world_size)
        return collate_pairs([self.pairs[indices[p]] for p in positions], positions, len(indices))


def _unchanged(batch: TrainBatch) -> TrainBatch:
    return batch


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


def step_loader(
    train_set: PairDataset,
    config: TrainConfig,
    start_step: int,
    total_steps: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[TrainBatch]:
    """This rank's share of steps ``start_step .. total_steps - 1``, decoded by :func:`loader_workers` workers.

    torch warns twice (at construction and at iteration) when the workers outnumber the CPUs; the
    training command's start line states the workers and the CPUs once instead.
    """
    shards = StepShards(TrainPairs(train_set, config.image_size), StepOrder(len(train_set), config.batch_size, config.seed),
                        rank, world_size)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        loader = DataLoader(
            shards,
            sampler=range(start_step, total_steps),
            batch_size=None,
            collate_fn=_unchanged,
            num_workers=loader_workers(config.num_workers),
            pin_memory=pin_memory,
        )
        return iter(loader)
