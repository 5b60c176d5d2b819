"""What every benchmark loader returns, and how a pair becomes a sample in the square model frame (docs/design.md §9.2, §10).

A loader reads a benchmark's native files once into :class:`PairRecord` s (paths, category,
keypoints in the original images' pixels, boxes, flip). Indexing it gives a :class:`PairSample`:
both images (decoded, unflipped) and the keypoints and PCK threshold in the ``frame x frame``
model frame (768 by default), computed as the official datasets do:

1. scale: ``x_f = x * frame / W``, ``y_f = y * frame / H`` (the image is resized anisotropically);
2. PF-Pascal ``flip`` rows: both images are mirrored after resizing, so ``x_f' = frame - x_f``
   (``frame``, not ``frame - 1``, as the official loader);
3. clamp into ``[1e-4, frame - 1 - 1e-4]`` (``regularise_coordinates``).

The PCK threshold is taken before the clamp: SPair the larger side of the target box in the
frame, PF-Pascal the frame side, PF-Willow the larger extent of the target keypoints. The maps
are the shared ones of :mod:`sd4match_sdk.ops.geometry`, the thresholds those of
:mod:`sd4match_sdk.ops.pck`, and images are decoded by :func:`sd4match_sdk.images.read_image_file`.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, ImageError
from ..images import read_image_file
from ..ops.geometry import clamp_to_frame, mirror_in_frame, pixels_to_frame
from ..ops.pck import ThresholdKind, pck_threshold

__all__ = ["PairRecord", "PairSample", "PairDataset", "check_box", "check_keypoints", "numeric_array", "read_rgb", "text_file_errors"]

@dataclass(frozen=True)
class PairRecord:
    """One annotated pair as read from the benchmark's files (original pixels, nothing resized).

    Attributes:
        source_path, target_path: image files.
        category: the pair's category name (SPair/PF-Pascal class, PF-Willow folder name).
        source_id, target_id: the official identifiers (``<cat>-<name>``, PF-Pascal
            ``<cat>-<name>-<flip>``): keys of class prompts and of the CPM DINOv2 cache.
        source_kps, target_kps: ``(N, 2)`` float64 ``(x, y)`` pixel keypoints, N >= 1.
        source_bbox, target_bbox: ``(4,)`` ``x1, y1, x2, y2`` pixel boxes, or ``None``.
        flip: mirror both images (PF-Pascal training rows).
        threshold_kind: how the PCK threshold is measured.
        name: a short unique name of the pair (SPair's layout line, or ``<src>-<trg>``).
    """

    source_path: Path
    target_path: Path
    category: str
    source_id: str
    target_id: str
    source_kps: np.ndarray
    target_kps: np.ndarray
    source_bbox: np.ndarray | None
    target_bbox: np.ndarray | None
    flip: bool
    threshold_kind: ThresholdKind
    name: str

    @property
    def num_keypoints(self) -> int:
        return int(self.source_kps.shape[0])


@dataclass(frozen=True)
class PairSample:
    """A pair ready for matching: images plus frame keypoints and threshold.

    Attributes:
        index: position in the dataset.
        record: the raw annotation.
        source_image, target_image: ``(H, W, 3)`` uint8 RGB, as stored (not flipped).
        source_kps, target_kps: ``(N, 2)`` float64 keypoints in the frame (flipped, clamped).
        threshold: PCK threshold in the frame.
        frame: side of the frame.
    """

    index: int
    record: PairRecord
    source_image: np.ndarray
    target_image: np.ndarray
    source_kps: np.ndarray
    target_kps: np.ndarray
    threshold: float
    frame: int

    @property
    def category(self) -> str:
        return self.record.category

    @property
    def flip(self) -> bool:
        return self.record.flip

    @property
    def source_size(self) -> tuple[int, int]:
        """``(W, H)`` of the source image."""
        return (self.source_image.shape[1], self.source_image.shape[0])

    @property
    def target_size(self) -> tuple[int, int]:
        return (self.target_image.shape[1], self.target_image.shape[0])

    def oriented_images(self) -> tuple[np.ndarray, np.ndarray]:
        """Both images mirrored when the pair is flipped (what the frame keypoints refer to)."""
        if not self.flip:
            return self.source_image, self.target_image
        return np.ascontiguousarray(self.source_image[:, ::-1]), np.ascontiguousarray(self.target_image[:, ::-1])


def read_rgb(path: Path) -> np.ndarray:
    """Decode a dataset image into ``(H, W, 3)`` uint8 RGB (:func:`~sd4match_sdk.images.read_image_file`).

    Raises:
        DatasetError: the file is missing or cannot be decoded (naming the file).
    """
    if not Path(path).is_file():
        raise DatasetError(f"{path}: image file is missing")
    try:
        return read_image_file(path)
    except ImageError as err:
        raise DatasetError(f"{path}: {err}") from None


def numeric_array(values: object, path: Path | str, what: str) -> np.ndarray:
    """``values`` as a float64 array, or a :class:`DatasetError` naming ``path``: ragged lists,
    strings, booleans, ``None`` and nested objects are not coordinates (they are never cast)."""
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError):  # ragged: numpy refuses inhomogeneous lists
        raw = None
    if raw is None or raw.dtype.kind not in "iuf" or _holds_bool(values):  # [True, 1] is an int array
        raise DatasetError(
            f"{path}: {what} must be a rectangular list of numbers (got {values!r:.120}); fix or remove this annotation"
        )
    return raw.astype(np.float64)


def _holds_bool(values: object) -> bool:
    if isinstance(values, (list, tuple)):
        return any(_holds_bool(v) for v in values)
    return isinstance(values, (bool, np.bool_))


@contextlib.contextmanager
def text_file_errors(path: Path) -> Iterator[None]:
    """A pair list that is not UTF-8 text, or not csv, as a :class:`DatasetError` naming it."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: not a readable pair list ({err}); restore the file") from None


def check_keypoints(points: object, path: Path | str, what: str) -> np.ndarray:
    """``(N, 2)`` finite float64 keypoints or a :class:`DatasetError` naming ``path``."""
    array = numeric_array(points, path, what)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise DatasetError(f"{path}: {what} must be a non-empty (N, 2) list of (x, y); got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: {what} contains NaN or infinite coordinates; fix or remove this annotation")
    return array


def check_box(box: object, path: Path | str, what: str) -> np.ndarray:
    """``(4,)`` float64 ``x1, y1, x2, y2`` with ``x2 > x1`` and ``y2 > y1``, or a :class:`DatasetError`
    naming ``path`` (a degenerate box would give a zero or negative PCK threshold)."""
    array = numeric_array(box, path, what)
    if array.shape != (4,) or not np.isfinite(array).all():
        raise DatasetError(f"{path}: {what} must be [x1, y1, x2, y2] of finite numbers; got {box!r:.120}")
    x1, y1, x2, y2 = array
    if not (x2 > x1 and y2 > y1):
        raise DatasetError(
            f"{path}: {what} {array.tolist()} is degenerate (needs x2 > x1 and y2 > y1); fix the box or remove the pair"
        )
    return array


class PairDataset:
    """Base of the benchmark loaders: a list of :class:`PairRecord` s; items are :class:`PairSample` s.

    Subclasses parse their native files into ``self.records`` in ``__init__``. Indexing decodes the
    two images and maps the keypoints into the frame. Works as a ``torch.utils.data.Dataset``.

    Args:
        root: the benchmark's directory (``SPair-71k/``, ``pf-pascal/``, ``pf-willow/``).
        split: ``trn``, ``val`` or ``test``.
        frame: side of the square model frame (768; the image size of the feature extractor).
    """

    name = "base"
    splits: tuple[str, ...] = ("trn", "val", "test")
    #: Every category the benchmark defines, in its official order.
    all_categories: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike, split: str = "test", frame: int = 768) -> None:
        self.root = Path(root)
        if split not in self.splits:
            raise DatasetError(f"{self.name}: unknown split {split!r}; choose one of: {', '.join(self.splits)}")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: {self.name} root directory is missing")
        if frame <= 1:
            raise DatasetError(f"frame must be > 1 (got {frame})")
        self.split = split
        self.frame = int(frame)
        self.records: list[PairRecord] = []
        #: The file the pairs were read from (recorded in evaluation results).
        self.pair_list: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PairSample]:
        for i in range(len(self)):
            yield self[i]

    def reframed(self, frame: int) -> PairDataset:
        """The same pairs in a ``frame x frame`` model frame (e.g. an engine's image size);
        ``self`` when the frame is already that. The records are shared, not re-read."""
        if int(frame) == self.frame:
            return self
        if frame <= 1:
            raise DatasetError(f"frame must be > 1 (got {frame})")
        other = copy.copy(self)
        other.frame = int(frame)
        return other

    @property
    def categories(self) -> list[str]:
        """Categories present in this split, sorted."""
        return sorted({r.category for r in self.records})

    def frame_keypoints(
        self, index: int, source_size: tuple[int, int], target_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Pair ``index``'s keypoints and PCK threshold in the frame, for images of these ``(W, H)``.

        Returns:
            ``(source_kps, target_kps, threshold)``: ``(N, 2)`` float64 frame keypoints (flipped,
            clamped) and the threshold (taken before the clamp).
        """
        record = self.records[index]
        frame = self.frame
        kps0 = pixels_to_frame(np.asarray(record.source_kps, np.float64), source_size, frame)
        kps1 = pixels_to_frame(np.asarray(record.target_kps, np.float64), target_size, frame)
        bbox1 = None
        if record.target_bbox is not None:
            # Mirroring moves the box but keeps its width and height, hence the threshold.
            bbox1 = pixels_to_frame(np.asarray(record.target_bbox, np.float64).reshape(2, 2), target_size, frame)
            bbox1 = bbox1.reshape(4)
        if record.flip:
            kps0, kps1 = mirror_in_frame(kps0, frame), mirror_in_frame(kps1, frame)
        threshold = pck_threshold(record.threshold_kind, frame, kps1, bbox1)
        return clamp_to_frame(kps0, frame), clamp_to_frame(kps1, frame), threshold

    def sample(self, index: int, source_image: np.ndarray, target_image: np.ndarray) -> PairSample:
        """Build the sample of pair ``index`` from its decoded images (frame keypoints, threshold)."""
        size0 = (source_image.shape[1], source_image.shape[0])
        size1 = (target_image.shape[1], target_image.shape[0])
        kps0, kps1, threshold = self.frame_keypoints(index, size0, size1)
        return PairSample(
            index=index,
            record=self.records[index],
            source_image=source_image,
            target_image=target_image,
            source_kps=kps0,
            target_kps=kps1,
            threshold=threshold,
            frame=self.frame,
        )

    def __getitem__(self, index: int) -> PairSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair index {index} out of range for {len(self)} pairs")
        index = index % len(self)
        record = self.records[index]
        return self.sample(index, read_rgb(record.source_path), read_rgb(record.target_path))
