"""PCK evaluation of a :class:`~sd4match_sdk.Matcher` on a benchmark split (docs/design.md §9, §9.5).

Single, Class and text prompts: the features of each unique image are computed once and reused by
all its pairs (:meth:`Matcher.features_batch`, :meth:`Matcher.match_features`), as the official
``test.py``. CPM prompts condition both images on the pair, so each pair runs the UNet, with each
image's DINOv2 tokens computed once (:class:`~.cache.DinoTokens`).

The work follows a plan (:mod:`.plan`) that does not depend on the number of processes: fixed
batches of ``batch_size`` images (or pairs), dealt to the processes of a ``torchrun`` launch in
rounds; a round's image features are exchanged so that every pair can be matched, and the
per-pair results are gathered at the end. Each process decodes its batches ahead of the model
(:mod:`.loading`). Every image or pair draws its noise from its own seeded generator, so the
per-pair results do not depend on the visiting order, and with the same ``batch_size`` they are
bitwise the same for any number of processes.

Coordinates: the dataset gives keypoints in the square model frame (clamped as the official
loaders); they go to the Matcher in original pixels (``x * W / frame``, inside the image) and the
matches come back to the frame, where PCK is measured against the frame threshold.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.base import PairDataset
from ..distributed import Distributed
from ..matcher import ImageFeatures, Matcher
from ..ops.geometry import frame_to_pixels, pixels_to_frame
from ..ops.pck import DEFAULT_ALPHAS, PCKSummary, pair_pck, summarize_pck
from .cache import DinoTokens, seeded_generator
from .loading import batch_loader
from .plan import EvalPlan, Round, build_plan, visiting_order

__all__ = ["PCK_UNIT", "EvalResult", "ScoredPair", "evaluate", "visiting_order"]

#: How the JSON results store PCK (the printed tables show percent, as the paper).
PCK_UNIT = "fraction of a pair's keypoints, 0-1 (printed tables: percent)"


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate` (the same on every process).

    Attributes:
        summary: PCK per alpha, overall and per category.
        pairs: per pair ``{"index", "name", "category", "num_keypoints", "pck": {alpha: fraction},
            "pred_kps": [[x, y], ...]}`` (the matches of the source keypoints in the frame), in
            visiting order.
        seconds: wall time of the evaluation (this process).
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


@dataclass(frozen=True)
class ScoredPair:
    """One matched pair: its visiting position, its JSON record and its ``(A,)`` PCK fractions."""

    position: int
    record: dict
    fractions: np.ndarray


def evaluate(
    matcher: Matcher,
    dataset: PairDataset,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int | None = 0,
    max_pairs: int | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "eval",
    batch_size: int = 1,
    workers: int = 0,
    distributed: Distributed | None = None,
) -> EvalResult:
    """PCK of ``matcher`` on ``dataset`` (frame = ``dataset.frame``, which should be the matcher's image size).

    Args:
        matcher: the matcher (its prompt, timestep, ensemble and match method are used as they are).
        dataset: a benchmark split.
        alphas: PCK tolerance factors.
        seed: seeds every image's (or pair's) noise; ``None`` draws from the global RNG.
        max_pairs: evaluate only N pairs, spread over the categories (:func:`~.plan.visiting_order`).
        progress: show a progress bar (on rank 0); it counts the images whose features are
            computed (the cost), with the pairs done beside it.
        autocast_dtype: run the feature extraction under CUDA autocast with this dtype (the
            official validation uses fp16 autocast over fp32 weights); ignored on the CPU.
        desc: progress bar label.
        batch_size: images (Single/Class/text) or pairs (CPM) per UNet batch. Results equal
            those of ``batch_size=1`` within the float rounding of a batched UNet.
        workers: DataLoader processes decoding the next batches (0: none; how they start: docs/design.md §13.19).
        distributed: this process's place in a ``torchrun`` launch (default: one process); every
            process must call ``evaluate`` with the same arguments.
    """
    distributed = distributed or Distributed()
    start = time.perf_counter()
    # 1. Plan the batches (the same for every number of processes) and the rounds that run them
    plan = build_plan(dataset, matcher.prompt_kind, max_pairs, batch_size)
    rounds = plan.schedule(distributed.world_size)
    # 2. Decode this process's batches ahead of the model
    mine = [r.batches[distributed.rank] for r in rounds if r.batches[distributed.rank] is not None]
    loaded = batch_loader(dataset, plan, mine, workers)
    # 3. Compute, exchange and match round by round
    runner_class = _PairRounds if plan.per_pair else _ImageRounds
    runner = runner_class(matcher, dataset, plan, rounds, seed, tuple(alphas), distributed)
    bar = _progress(plan, desc, progress and distributed.is_main)
    scored: list[ScoredPair] = []
    pairs_done = 0
    with bar:
        for index, round_ in enumerate(rounds):
            with _autocast(matcher.device.type, autocast_dtype):
                scored += runner.run_round(index, round_, loaded)
            pairs_done += round_.num_pairs
            bar.set_postfix_str(f"{pairs_done}/{len(plan.order)} pairs", refresh=False)
            bar.update(plan.round_images(round_))
    # 4. Gather every process's pairs, in visiting order
    everyone = sorted((p for part in distributed.gather_objects(scored) for p in part), key=lambda p: p.position)
    # 5. Summarise
    fractions = np.stack([p.fractions for p in everyone]) if everyone else np.zeros((0, len(alphas)))
    summary = summarize_pck(fractions, [p.record["category"] for p in everyone], tuple(float(a) for a in alphas))
    settings = _settings(matcher, dataset, seed, len(plan.order), batch_size)
    return EvalResult(summary, [p.record for p in everyone], time.perf_counter() - start, settings)


class _Rounds:
    """What both kinds of evaluation share: the inputs, and scoring a matched pair."""

    def __init__(self, matcher: Matcher, dataset: PairDataset, plan: EvalPlan, rounds: list[Round], seed: int | None,
                 alphas: tuple[float, ...], distributed: Distributed) -> None:  # fmt: skip
        self.matcher, self.dataset, self.plan, self.rounds = matcher, dataset, plan, rounds
        self.seed, self.alphas, self.distributed = seed, alphas, distributed

    def run_round(self, index: int, round_: Round, loaded: Iterator[list[tuple]]) -> list[ScoredPair]:
        raise NotImplementedError

    def score(self, position: int, source: ImageFeatures, target: ImageFeatures) -> ScoredPair:
        """Match pair ``position``'s source keypoints into the target and score them in the frame."""
        index = self.plan.order[position]
        frame = self.dataset.frame
        kps0, kps1, threshold = self.dataset.frame_keypoints(index, source.size, target.size)
        query = frame_to_pixels(torch.from_numpy(kps0).float(), source.size, frame)
        result = self.matcher.match_features(source, target, query)
        pred = pixels_to_frame(torch.from_numpy(np.asarray(result.points)).double(), target.size, frame).numpy()
        fractions = pair_pck(pred, kps1, threshold, self.alphas)
        record = self.dataset.records[index]
        return ScoredPair(position, {
            "index": index,
            "name": record.name,
            "category": record.category,
            "num_keypoints": record.num_keypoints,
            "pck": {f"{a:g}": float(s) for a, s in zip(self.alphas, fractions)},
            "pred_kps": pred.tolist(),
        }, fractions)  # fmt: skip


class _ImageRounds(_Rounds):
    """Single/Class/text: each rank computes its batch of images, the round's features are
    exchanged, and each rank matches its share of the pairs that became complete."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.features: dict[int, ImageFeatures] = {}

    def _compute(self, batch: list[tuple[int, np.ndarray]]) -> tuple[Tensor, list[tuple[int, tuple[int, int]]]]:
        units = [self.plan.images[u] for u, _ in batch]
        generators = [seeded_generator(self.seed, "image", *unit.key) for unit in units]
        feats = self.matcher.features_batch([image for _, image in batch], [unit.category for unit in units],
                                            generators=generators)  # fmt: skip
        return torch.cat([f.features for f in feats]), [(u, f.size) for (u, _), f in zip(batch, feats)]

    def run_round(self, index: int, round_: Round, loaded: Iterator[list[tuple]]) -> list[ScoredPair]:
        rank = self.distributed.rank
        mine = round_.batches[rank]
        exchanged = self.distributed.exchange(
            lambda: (None, []) if mine is None else self._compute(next(loaded)),
            f"computing image features (round {index})",
            self.matcher.device,
        )
        for tensor, units in exchanged:
            for row, (unit, size) in enumerate(units):
                self.features[unit] = ImageFeatures(tensor[row : row + 1], tuple(size), self.plan.images[unit].category)
        with self.distributed.together(f"matching pairs (round {index})"):
            scored = [self._score(position) for position in round_.matches[rank]]
        for unit in round_.release:
            self.features.pop(unit, None)
        return scored

    def _score(self, position: int) -> ScoredPair:
        u0, u1 = self.plan.pair_images[position]
        return self.score(position, self.features[u0], self.features[u1])


class _PairRounds(_Rounds):
    """CPM: each rank computes and matches its batch of pairs, with each image's DINOv2 tokens
    computed once on that rank (when the backend takes tokens)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tokens = None
        if callable(getattr(self.matcher.backend, "dino_tokens", None)):
            positions = [p for r in self.rounds for p in r.matches[self.distributed.rank]]
            self.tokens = DinoTokens(self.matcher.backend, [k for p in positions for k in self._keys(p)])

    def _keys(self, position: int) -> tuple[tuple[str, bool], tuple[str, bool]]:
        record = self.dataset.records[self.plan.order[position]]
        return (record.source_id, record.flip), (record.target_id, record.flip)

    def _compute(self, batch: list[tuple[int, np.ndarray, np.ndarray]]) -> list[ScoredPair]:
        indices = [self.plan.order[position] for position, _, _ in batch]
        generators = [seeded_generator(self.seed, "pair", self.dataset.records[i].name, i) for i in indices]
        noises = [self.matcher.draw_pair_noise(generator=g) for g in generators]
        sources, targets = [b[1] for b in batch], [b[2] for b in batch]
        extra = {}
        if self.tokens is not None:
            keys = [self._keys(position) for position, _, _ in batch]
            extra["tokens"] = (self.tokens.take([k[0] for k in keys], sources), self.tokens.take([k[1] for k in keys], targets))
        feats = self.matcher.backend.extract_pairs(sources, targets, [None] * len(batch), noises, **extra)
        size = lambda image: (image.shape[1], image.shape[0])  # noqa: E731
        return [
            self.score(position, ImageFeatures(feats[2 * k : 2 * k + 1], size(s)), ImageFeatures(feats[2 * k + 1 : 2 * k + 2], size(t)))
            for k, (position, s, t) in enumerate(batch)
        ]

    def run_round(self, index: int, round_: Round, loaded: Iterator[list[tuple]]) -> list[ScoredPair]:
        scored: list[ScoredPair] = []
        with self.distributed.together(f"matching pairs (round {index})"):
            if round_.batches[self.distributed.rank] is not None:
                scored = self._compute(next(loaded))
        return scored


def _settings(matcher: Matcher, dataset: PairDataset, seed: int | None, num_pairs: int, batch_size: int) -> dict[str, Any]:
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
        "batch_size": batch_size,
        "num_pairs": num_pairs,
        "pair_list": _relative(dataset.pair_list, dataset.root),
    }


def _relative(path, root) -> str | None:
    """``path`` relative to the dataset root when inside it (results do not depend on where data lives)."""
    if path is None:
        return None
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _progress(plan: EvalPlan, desc: str, enabled: bool) -> tqdm:
    """A bar over the images whose features are computed: they cost the time, pairs do not."""
    return tqdm(total=plan.num_images, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def _autocast(device_type: str, dtype: torch.dtype | None):
    if dtype is None or device_type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)
