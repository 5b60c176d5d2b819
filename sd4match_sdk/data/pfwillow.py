"""PF-Willow in its native layout (docs/design.md §10.4).

``test_pairs.csv``: ``imageA, imageB``, then 20 source values (10 x, then 10 y), then 20 target
values; images ``PF-dataset/<class>/<name>.png``. Every pair has 10 keypoints. The PCK threshold is
the larger extent of the target keypoints in the frame (``max(max - min)`` over x and y).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DatasetError
from ..ops.pck import ThresholdKind
from .base import PairDataset, PairRecord, check_keypoints, text_file_errors

__all__ = ["PFWillowDataset", "PFWILLOW_CATEGORIES", "PFWILLOW_KEYPOINTS"]

PFWILLOW_CATEGORIES = (
    "car(G)", "car(M)", "car(S)", "duck(S)", "motorbike(G)", "motorbike(M)", "motorbike(S)",
    "winebottle(M)", "winebottle(wC)", "winebottle(woC)",
)  # fmt: skip
#: Keypoints per PF-Willow image.
PFWILLOW_KEYPOINTS = 10


class PFWillowDataset(PairDataset):
    """The 900 PF-Willow test pairs.

    Args:
        root: the ``pf-willow`` directory (holding the pair list and ``PF-dataset/``).
        split: only ``test`` exists.
        frame: side of the model frame (768).
        pair_list: the pair csv, relative to ``root`` or absolute (``test_pairs.csv``).

    Raises:
        DatasetError: a missing pair list or a malformed row.
    """

    name = "pfwillow"
    splits = ("test",)
    all_categories = PFWILLOW_CATEGORIES

    def __init__(
        self, root: str | os.PathLike, split: str = "test", frame: int = 768, pair_list: str | os.PathLike = "test_pairs.csv"
    ) -> None:
        super().__init__(root, split, frame)
        pairs = self.root / pair_list
        self.pair_list = pairs
        if not pairs.is_file():
            others = sorted(p.name for p in self.root.glob("*.csv"))
            found = f"; csv files in {self.root}: {', '.join(others)}" if others else ""
            raise DatasetError(
                f"{pairs}: PF-Willow pair list is missing; pass the pair list with --pair-list FILE (relative to "
                f"--root; in Python: pair_list=...){found}"
            )
        n = PFWILLOW_KEYPOINTS
        with pairs.open(newline="", encoding="utf-8") as f, text_file_errors(pairs):
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{pairs}: the pair list is empty")
            for row_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                where = f"{pairs}:{row_number}"
                if len(row) != 2 + 4 * n:
                    raise DatasetError(f"{where}: expected {2 + 4 * n} columns (imageA, imageB, 4 x {n} coordinates); got {len(row)}")
                try:
                    values = np.array([float(v) for v in row[2:]], dtype=np.float64)
                except ValueError:
                    raise DatasetError(f"{where}: keypoint coordinates must be numbers") from None
                kps0 = check_keypoints(values[: 2 * n].reshape(2, n).T, where, "imageA keypoints")
                kps1 = check_keypoints(values[2 * n :].reshape(2, n).T, where, "imageB keypoints")
                if not np.ptp(kps1, axis=0).max() > 0:  # the PCK threshold is their extent
                    raise DatasetError(f"{where}: the imageB keypoints all coincide (zero PCK threshold); fix or remove the row")
                self.records.append(self._record(where, row[0], row[1], kps0, kps1))
        if not self.records:
            raise DatasetError(f"{pairs}: the pair list is empty")

    def _record(self, where: str, image0: str, image1: str, kps0: np.ndarray, kps1: np.ndarray) -> PairRecord:
        parts0, parts1 = PurePosixPath(image0).parts, PurePosixPath(image1).parts
        if len(parts0) < 3 or len(parts1) < 3:
            raise DatasetError(f"{where}: image paths must look like PF-dataset/<class>/<name>.png; got {image0!r}, {image1!r}")
        category = parts0[1]
        paths = [self.root / "PF-dataset" / Path(*p[1:]) for p in (parts0, parts1)]
        return PairRecord(
            source_path=paths[0],
            target_path=paths[1],
            category=category,
            source_id=f"{category}-{paths[0].stem}",
            target_id=f"{parts1[1]}-{paths[1].stem}",
            source_kps=kps0,
            target_kps=kps1,
            source_bbox=None,
            target_bbox=None,
            flip=False,
            threshold_kind=ThresholdKind.KEYPOINTS,
            name=f"{category}-{paths[0].stem}-{paths[1].stem}",
        )
