"""Percentage of Correct Keypoints (docs/design.md §9).

A keypoint is correct when ``||pred - gt||_2 <= alpha * threshold`` (both in the model frame).
The threshold depends on the benchmark (:class:`ThresholdKind`, :func:`pck_threshold`).
A pair's score is the fraction of its keypoints that are correct. ``all`` is the mean over
*pairs* (not over categories, not over keypoints); a category's score is the mean over its
pairs. This is the official evaluator's ``BY='image'`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from ..checks import check_fraction
from ..errors import ConfigError, ShapeError

__all__ = [
    "DEFAULT_ALPHAS",
    "ThresholdKind",
    "pck_threshold",
    "pair_pck",
    "PCKSummary",
    "summarize_pck",
    "PCKAccumulator",
    "check_alphas",
]

#: The paper's alpha values.
DEFAULT_ALPHAS = (0.05, 0.1, 0.15)


class ThresholdKind(StrEnum):
    """How a benchmark's PCK threshold is measured (docs/design.md §9.2)."""

    BBOX = "bbox"  # SPair-71k: max(w, h) of the target box
    IMAGE = "image"  # PF-Pascal: max(H, W) of the resized target image, i.e. the frame
    KEYPOINTS = "keypoints"  # PF-Willow: max extent of the target keypoints


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    """PCK alphas as floats, each in ``(0, 1]``, at least one.

    Raises:
        ConfigError: no alphas, or one that is not a number in ``(0, 1]``.
    """
    try:
        items = [] if isinstance(alphas, (str, bytes)) else list(alphas)
    except TypeError:
        items = []
    if not items:
        raise ConfigError(f"alphas must be a non-empty list of fractions in (0, 1] (got {alphas!r}); e.g. [0.05, 0.1, 0.15]")
    return tuple(check_fraction("alpha", a) for a in items)


def pck_threshold(
    kind: ThresholdKind,
    frame: int,
    target_kps_frame: np.ndarray | None = None,
    target_bbox_frame: np.ndarray | None = None,
) -> float:
    """The PCK threshold of a pair in the model frame (before clamping).

    Args:
        kind: the benchmark's rule.
        frame: side of the frame.
        target_kps_frame: ``(N, 2)`` target keypoints in the frame (PF-Willow).
        target_bbox_frame: ``(4,)`` target box ``x1, y1, x2, y2`` in the frame (SPair).
    """
    if kind is ThresholdKind.IMAGE:
        return float(frame)
    if kind is ThresholdKind.BBOX:
        x1, y1, x2, y2 = np.asarray(target_bbox_frame, np.float64)
        return float(max(x2 - x1, y2 - y1))
    kps = np.asarray(target_kps_frame, np.float64)
    return float((kps.max(axis=0) - kps.min(axis=0)).max())


def pair_pck(pred: np.ndarray, gt: np.ndarray, threshold: float, alphas: Sequence[float] = DEFAULT_ALPHAS) -> np.ndarray:
    """Fraction of one pair's keypoints within ``alpha * threshold`` of the ground truth.

    Args:
        pred: ``(N, 2)`` predicted ``(x, y)``.
        gt: ``(N, 2)`` ground truth ``(x, y)``, same frame.
        threshold: the pair's PCK threshold in that frame.
        alphas: ``A`` tolerance factors.

    Returns:
        ``(A,)`` float64 fractions in ``[0, 1]``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[-1] != 2 or pred.shape != gt.shape or pred.shape[0] == 0:
        raise ShapeError(
            f"pred and gt must both be (N, 2) with N >= 1; got {pred.shape} and {gt.shape}",
            actual=pred.shape,
            expected="(N, 2)",
        )
    dist = np.linalg.norm(pred - gt, axis=-1)  # (N,)
    limits = np.asarray(alphas, dtype=np.float64)[:, None] * float(threshold)  # (A, 1)
    return (dist[None] <= limits).mean(axis=-1)


@dataclass(frozen=True)
class PCKSummary:
    """PCK of a set of pairs.

    Attributes:
        alphas: the tolerance factors.
        overall: ``{alpha: mean over all pairs}``.
        per_category: ``{alpha: {category: mean over the category's pairs}}``.
        counts: ``{category: number of pairs}``.
        num_pairs: number of pairs.
    """

    alphas: tuple[float, ...]
    overall: dict[float, float]
    per_category: dict[float, dict[str, float]]
    counts: dict[str, int] = field(default_factory=dict)
    num_pairs: int = 0

    @property
    def categories(self) -> list[str]:
        return sorted(self.counts)

    def to_dict(self) -> dict:
        """JSON-friendly ``{"alphas": [...], "pck": {"0.1": {"all": x, "per_category": {...}}}, ...}``."""
        return {
            "alphas": list(self.alphas),
            "num_pairs": self.num_pairs,
            "pairs_per_category": dict(sorted(self.counts.items())),
            "pck": {
                f"{a:g}": {"all": self.overall[a], "per_category": dict(sorted(self.per_category[a].items()))}
                for a in self.alphas
            },
        }


def summarize_pck(fractions: np.ndarray, categories: Sequence[str], alphas: Sequence[float] = DEFAULT_ALPHAS) -> PCKSummary:
    """Aggregate per-pair PCK: ``all`` = mean over pairs, each category = mean over its pairs.

    Args:
        fractions: ``(P, A)`` per-pair PCK (from :func:`pair_pck`).
        categories: ``P`` category names.
        alphas: the ``A`` alphas.
    """
    fractions = np.asarray(fractions, dtype=np.float64).reshape(len(categories), len(alphas))
    cats = np.asarray(list(categories), dtype=object)
    names = sorted(set(categories))
    overall = {a: float(fractions[:, i].mean()) if len(fractions) else float("nan") for i, a in enumerate(alphas)}
    per_category = {a: {c: float(fractions[cats == c, i].mean()) for c in names} for i, a in enumerate(alphas)}
    counts = {c: int((cats == c).sum()) for c in names}
    return PCKSummary(tuple(alphas), overall, per_category, counts, len(categories))


class PCKAccumulator:
    """Collects per-pair PCK and summarises it.

    Args:
        alphas: the tolerance factors.

    Raises:
        ConfigError: no alphas, or an alpha outside ``(0, 1]``.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        self.alphas = check_alphas(alphas)
        self.fractions: list[np.ndarray] = []
        self.categories: list[str] = []

    def __len__(self) -> int:
        return len(self.categories)

    def add(self, pred: np.ndarray, gt: np.ndarray, threshold: float, category: str) -> np.ndarray:
        """Score one pair; returns its ``(A,)`` fractions."""
        scores = pair_pck(pred, gt, threshold, self.alphas)
        self.fractions.append(scores)
        self.categories.append(category)
        return scores

    def summary(self) -> PCKSummary:
        fractions = np.stack(self.fractions) if self.fractions else np.zeros((0, len(self.alphas)))
        return summarize_pck(fractions, self.categories, self.alphas)
