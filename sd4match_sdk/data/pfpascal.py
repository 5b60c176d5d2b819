"""PF-Pascal in its native layout (docs/design.md §10.3).

``<split>_pairs.csv`` (columns ``source_image, target_image, class`` with the class 1-based, and
``flip`` in ``trn``); images ``PF-dataset-PASCAL/JPEGImages/<name>.jpg``; annotations
``PF-dataset-PASCAL/Annotations/<class>/<name>.mat`` with ``kps`` (N x 2, NaN where invisible)
and ``bbox`` (row 0 = ``x1, y1, x2, y2``). A pair keeps the keypoints visible in *both* images.
Only ``trn`` rows are flipped, as the official loader; other splits ignore a ``flip`` column.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..ops.pck import ThresholdKind
from .base import PairDataset, PairRecord, check_box, numeric_array, text_file_errors

__all__ = ["PFPascalDataset", "PFPASCAL_CATEGORIES", "read_pfpascal_annotation"]

PFPASCAL_CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def read_pfpascal_annotation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``kps`` ``(N, 2)`` (NaN kept) and ``bbox`` ``(4,)`` of a PF-Pascal ``.mat`` file.

    Raises:
        DatasetError: the file is missing, unreadable, or lacks ``kps``/``bbox`` of the right shape.
    """
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise DatasetError(f"{path}: PF-Pascal annotation is missing")
    try:
        content = scipy.io.loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as err:
        raise DatasetError(f"{path}: cannot read as a MATLAB .mat file ({err})") from None
    for key in ("kps", "bbox"):
        if key not in content:
            raise DatasetError(f"{path}: no '{key}' variable (found: {', '.join(k for k in content if not k.startswith('__'))})")
    kps = numeric_array(content["kps"], path, "'kps'")
    bbox = numeric_array(content["bbox"], path, "'bbox'")
    if kps.ndim != 2 or kps.shape[1] != 2 or np.isinf(kps).any():
        raise DatasetError(f"{path}: 'kps' must be N x 2 finite numbers (NaN where invisible); got shape {kps.shape}")
    if bbox.ndim != 2 or bbox.shape[1] != 4 or bbox.shape[0] == 0:
        raise DatasetError(f"{path}: 'bbox' must have rows of x1, y1, x2, y2; got shape {bbox.shape}")
    return kps, check_box(bbox[0], path, "'bbox'")


class PFPascalDataset(PairDataset):
    """PF-Pascal pairs of one split; PCK threshold = the frame side (the resized image).

    Args:
        root: the ``pf-pascal`` directory (holding ``<split>_pairs.csv`` and ``PF-dataset-PASCAL/``).
        split: ``trn``, ``val`` or ``test``.
        frame: side of the model frame (768).

    Raises:
        DatasetError: a missing or malformed csv row or annotation file.
    """

    name = "pfpascal"
    all_categories = PFPASCAL_CATEGORIES

    def __init__(self, root: str | os.PathLike, split: str = "test", frame: int = 768) -> None:
        super().__init__(root, split, frame)
        pairs = self.root / f"{split}_pairs.csv"
        self.pair_list = pairs
        if not pairs.is_file():
            raise DatasetError(f"{pairs}: PF-Pascal pair list is missing")
        base = self.root / "PF-dataset-PASCAL"
        annotations: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        with pairs.open(newline="", encoding="utf-8", errors="strict") as f, text_file_errors(pairs):
            reader = csv.DictReader(f)
            needed = ["source_image", "target_image", "class"] + (["flip"] if split == "trn" else [])
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{pairs}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
            for row_number, row in enumerate(reader, start=2):
                self.records.append(self._read_row(pairs, row_number, row, base, annotations))
        if not self.records:
            raise DatasetError(f"{pairs}: the pair list is empty")

    def _read_row(self, pairs: Path, row_number: int, row: dict, base: Path, cache: dict) -> PairRecord:
        where = f"{pairs}:{row_number}"
        try:
            class_id = int(row["class"])
            flip = bool(int(row["flip"])) if self.split == "trn" else False
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: class/flip must be integers; got {row.get('class')!r}/{row.get('flip')!r}") from None
        if not 1 <= class_id <= len(PFPASCAL_CATEGORIES):
            raise DatasetError(f"{where}: class {class_id} outside 1..{len(PFPASCAL_CATEGORIES)}")
        category = PFPASCAL_CATEGORIES[class_id - 1]
        names = [os.path.basename(row["source_image"] or ""), os.path.basename(row["target_image"] or "")]
        if not all(n.endswith(".jpg") for n in names):
            raise DatasetError(f"{where}: image names must be .jpg files; got {names}")
        anns = []
        for name in names:
            path = base / "Annotations" / category / (name[:-4] + ".mat")
            if path not in cache:
                cache[path] = read_pfpascal_annotation(path)
            anns.append((path, *cache[path]))
        (path0, kps0, box0), (path1, kps1, box1) = anns
        if kps0.shape != kps1.shape:
            raise DatasetError(f"{path0} and {path1}: different keypoint counts ({len(kps0)} vs {len(kps1)})")
        visible = ~(np.isnan(kps0).any(axis=1) | np.isnan(kps1).any(axis=1))
        if not visible.any():
            raise DatasetError(f"{path0} and {path1}: no keypoint is visible in both images")
        tag = int(flip)
        return PairRecord(
            source_path=base / "JPEGImages" / names[0],
            target_path=base / "JPEGImages" / names[1],
            category=category,
            source_id=f"{category}-{names[0][:-4]}-{tag}",
            target_id=f"{category}-{names[1][:-4]}-{tag}",
            source_kps=kps0[visible],
            target_kps=kps1[visible],
            source_bbox=box0,
            target_bbox=box1,
            flip=flip,
            threshold_kind=ThresholdKind.IMAGE,
            name=f"{names[0][:-4]}-{names[1][:-4]}-{tag}",
        )
