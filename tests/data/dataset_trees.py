"""Small benchmark trees in the datasets' native layouts, built from the real fixture files.

PF-Pascal: the fixtures hold the real pair csvs but no images or annotations, so this writes a
``pf-pascal/`` tree with the first rows of the real ``test``/``trn``/``val`` lists, a JPEG per image
(random pixels, a size per image) and a ``.mat`` per image written by scipy with ``kps`` (N x 2,
NaN where invisible) and ``bbox``. Test rows use the csv's own keypoint columns (the keypoints
visible in both images) plus one keypoint hidden in each image; train/val rows get seeded
keypoints, some on the image border (to exercise the clamp) and some NaN.

Loaded by ``tests/data/conftest.py`` and ``tests/training/conftest.py`` by file path.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

PFPASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [row for row in reader if row]


def _distinct(
    rows: list[list[str]],
    count: int,
    used: set[str],
    want_flip: tuple[int, ...] | None = None,
    classes: set[str] | None = None,
) -> list[list[str]]:
    """The first rows whose images are not used yet (optionally with the given flip values in
    order, or only of the given classes)."""
    chosen = []
    for row in rows:
        names = {row[0], row[1]}
        if names & used or row[0] == row[1] or (classes is not None and row[2] not in classes):
            continue
        if want_flip is not None and int(row[3]) != want_flip[len(chosen)]:
            continue
        chosen.append(row)
        used |= names
        if len(chosen) == count:
            break
    return chosen


def _write_image(path: Path, size_wh: tuple[int, int], seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size_wh
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _write_mat(path: Path, kps: np.ndarray, bbox: np.ndarray) -> None:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"kps": np.asarray(kps, np.float64), "bbox": np.asarray(bbox, np.float64)[None]})


def build_pfpascal_tree(dst: Path, csv_dir: Path, n_test: int = 3, n_trn: int = 4, n_val: int = 2) -> Path:
    """Write ``dst/pf-pascal`` in PF-Pascal's layout; returns that directory."""
    root = dst / "pf-pascal"
    base = root / "PF-dataset-PASCAL"
    used: set[str] = set()
    seed = 0

    def image(name: str, size: tuple[int, int]) -> None:
        nonlocal seed
        seed += 1
        _write_image(base / "JPEGImages" / Path(name).name, size, seed)

    def annotation(cls_id: int, name: str, kps: np.ndarray, size: tuple[int, int]) -> None:
        w, h = size
        bbox = np.array([0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h]).round()
        _write_mat(base / "Annotations" / PFPASCAL_CLASSES[cls_id - 1] / (Path(name).stem + ".mat"), kps, bbox)

    # test: keypoints from the csv (visible in both), plus one hidden in each image.
    header, rows = _rows(csv_dir / "test_pairs.csv")
    test_rows = _distinct(rows, n_test, used)
    for row in test_rows:
        cls_id = int(row[2])
        xa, ya, xb, yb = (np.array([float(v) for v in row[i].split(";")]) for i in (3, 4, 5, 6))
        kps0 = np.concatenate([np.stack([xa, ya], 1), [[np.nan, np.nan], [5.0, 6.0]]])
        kps1 = np.concatenate([np.stack([xb, yb], 1), [[7.0, 8.0], [np.nan, np.nan]]])
        for name, kps in ((row[0], kps0), (row[1], kps1)):
            size = (int(np.nanmax(kps[:, 0])) + 37, int(np.nanmax(kps[:, 1])) + 23)
            image(name, size)
            annotation(cls_id, name, kps, size)
    _write_csv(root / "test_pairs.csv", header, test_rows)

    # trn (with flips) and val: seeded keypoints; the first image of each pair has corner points.
    # val rows only of classes that trn has (a Class prompt knows the training classes only).
    rng = np.random.default_rng(1234)
    trn_classes: set[str] = set()
    for split, file, count, flips in (
        ("trn", "trn_pairs.csv", n_trn, tuple(i % 2 for i in range(n_trn))),
        ("val", "val_pairs_flip_nocoords.csv", n_val, None),
    ):
        header, rows = _rows(csv_dir / file)
        chosen = _distinct(rows, count, used, flips, classes=trn_classes if split == "val" else None)
        if split == "trn":
            trn_classes = {r[2] for r in chosen}
        for row in chosen:
            cls_id = int(row[2])
            n = 8
            for k, name in enumerate(row[:2]):
                size = (int(rng.integers(200, 500)), int(rng.integers(150, 400)))
                kps = np.stack([rng.uniform(0, size[0] - 1, n), rng.uniform(0, size[1] - 1, n)], 1)
                if k == 0:
                    kps[0] = [0.0, 0.0]  # -> clamped to 1e-4 (or mirrored to the far edge)
                    kps[1] = [size[0] - 0.1, size[1] - 0.1]  # beyond 767 in the frame -> clamped
                kps[2 + k] = np.nan  # one hidden point per image
                image(name, size)
                annotation(cls_id, name, kps, size)
        _write_csv(root / f"{split}_pairs.csv", header[:4], [r[:4] for r in chosen])
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def copy_spair_tree(src: Path, dst: Path) -> Path:
    """A writable copy of the SPair-71k fixture (to edit or break files in tests)."""
    target = dst / "SPair-71k"
    shutil.copytree(src, target)
    return target


# ------------------------------------------------------------ expected values, written out longhand

FRAME = 768
EPS = 1e-4


def image_size(path) -> tuple[int, int]:
    """``(W, H)`` of an image file."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def clamp(v: float) -> float:
    """The official clamp into ``[1e-4, 767 - 1e-4]`` of one frame coordinate."""
    if v <= 0:
        return EPS
    if v >= FRAME - 1:
        return FRAME - 1 - EPS
    return v
