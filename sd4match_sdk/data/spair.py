"""SPair-71k in its native layout (docs/design.md §10.2).

``Layout/large/<split>.txt`` lists pairs as ``<id>-<src>-<trg>:<category>``; each has
``PairAnnotation/<split>/<line>.json`` (``src_kps``, ``trg_kps``, ``src_bndbox``, ``trg_bndbox``,
``category``); images are ``JPEGImages/<category>/<name>.jpg``. ``Segmentation/`` masks are not
needed (the official loader reads them and never uses them). Any number of keypoints per pair
is accepted (no padding to 20).
"""

from __future__ import annotations

import json
import os

from ..errors import DatasetError
from ..ops.pck import ThresholdKind
from .base import PairDataset, PairRecord, check_box, check_keypoints

__all__ = ["SPairDataset", "SPAIR_CATEGORIES"]

SPAIR_CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip


class SPairDataset(PairDataset):
    """SPair-71k pairs of one split; PCK threshold = larger side of the target box.

    Args:
        root: the ``SPair-71k`` directory.
        split: ``trn``, ``val`` or ``test``.
        frame: side of the model frame (768).

    Raises:
        DatasetError: a missing layout/annotation file, a malformed line or JSON field.
    """

    name = "spair"
    all_categories = SPAIR_CATEGORIES

    def __init__(self, root: str | os.PathLike, split: str = "test", frame: int = 768) -> None:
        super().__init__(root, split, frame)
        layout = self.root / "Layout" / "large" / f"{split}.txt"
        self.pair_list = layout
        if not layout.is_file():
            raise DatasetError(f"{layout}: SPair-71k pair list is missing")
        try:
            lines = [line.strip() for line in layout.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as err:
            raise DatasetError(f"{layout}: not a text file ({err}); restore the SPair-71k pair list") from None
        for number, line in enumerate(lines, start=1):
            if line:
                self.records.append(self._read_pair(layout, number, line))
        if not self.records:
            raise DatasetError(f"{layout}: the pair list is empty")

    def _read_pair(self, layout: os.PathLike, number: int, line: str) -> PairRecord:
        parts = line.split(":")
        names = parts[0].split("-")
        if len(parts) != 2 or len(names) != 3 or not all(names) or not parts[1]:
            raise DatasetError(f"{layout}:{number}: malformed pair line {line!r}; expected '<id>-<src>-<trg>:<category>'")
        _, src, trg = names
        category = parts[1]
        path = self.root / "PairAnnotation" / self.split / f"{line}.json"
        if not path.is_file():
            raise DatasetError(f"{path}: pair annotation is missing (listed in {layout}:{number})")
        try:
            ann = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise DatasetError(f"{path}: not valid JSON ({err}); restore the annotation file") from None
        if not isinstance(ann, dict):
            raise DatasetError(f"{path}: expected a JSON object with src_kps, trg_kps, src_bndbox, trg_bndbox; got {type(ann).__name__}")
        missing = [k for k in ("src_kps", "trg_kps", "src_bndbox", "trg_bndbox", "category") if k not in ann]
        if missing:
            raise DatasetError(f"{path}: missing field(s) {', '.join(missing)}")
        if ann["category"] != category:
            raise DatasetError(f"{path}: category {ann['category']!r} differs from the pair list's {category!r}")
        kps0 = check_keypoints(ann["src_kps"], path, "src_kps")
        kps1 = check_keypoints(ann["trg_kps"], path, "trg_kps")
        if kps0.shape != kps1.shape:
            raise DatasetError(f"{path}: src_kps has {len(kps0)} points but trg_kps has {len(kps1)}")
        boxes = [check_box(ann[key], path, key) for key in ("src_bndbox", "trg_bndbox")]
        images = self.root / "JPEGImages" / category
        return PairRecord(
            source_path=images / f"{src}.jpg",
            target_path=images / f"{trg}.jpg",
            category=category,
            source_id=f"{category}-{src}",
            target_id=f"{category}-{trg}",
            source_kps=kps0,
            target_kps=kps1,
            source_bbox=boxes[0],
            target_bbox=boxes[1],
            flip=False,
            threshold_kind=ThresholdKind.BBOX,
            name=line,
        )
