"""Benchmark loaders on real fixture files: counts, categories, frame keypoints and thresholds.

The expected frame values are computed here from the raw files (JSON, csv, .mat, image sizes)
with the official rules written out longhand: ``x * 768 / W``, PF-Pascal flip ``x' = 768 - x``,
then the clamp into ``[1e-4, 767 - 1e-4]``.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from sd4match_sdk.data import PFPascalDataset, PFWillowDataset, SPairDataset, ThresholdKind, load_dataset
from sd4match_sdk.errors import DatasetError

FRAME = 768
EPS = 1e-4


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def clamp(v: float) -> float:
    if v <= 0:
        return EPS
    if v >= FRAME - 1:
        return FRAME - 1 - EPS
    return v


# ---------------------------------------------------------------------------------- SPair-71k


class TestSPair:
    def test_counts_and_categories(self, spair_root):
        ds = SPairDataset(spair_root, "test")
        assert len(ds) == 4
        assert ds.categories == ["aeroplane", "cow", "dog", "motorbike"]
        assert [r.num_keypoints for r in ds.records] == [7, 7, 9, 7]
        assert not (spair_root / "Segmentation").exists()  # the loader must not need masks
        assert ds.records[0].source_id == "aeroplane-2008_007604"

    def test_frame_keypoints_and_threshold_by_hand(self, spair_root):
        line = "000167-2008_007604-2009_001056:aeroplane"
        ann = json.loads((spair_root / "PairAnnotation" / "test" / f"{line}.json").read_text())
        w0, h0 = image_size(spair_root / "JPEGImages/aeroplane/2008_007604.jpg")
        w1, h1 = image_size(spair_root / "JPEGImages/aeroplane/2009_001056.jpg")
        assert (w0, h0, w1, h1) == (333, 500, 500, 334) == (*ann["src_imsize"][:2], *ann["trg_imsize"][:2])
        src = [[clamp(x * 768 / 333), clamp(y * 768 / 500)] for x, y in ann["src_kps"]]
        trg = [[clamp(x * 768 / 500), clamp(y * 768 / 334)] for x, y in ann["trg_kps"]]
        x1, y1, x2, y2 = ann["trg_bndbox"]  # [14, 71, 483, 220]
        threshold = max((x2 - x1) * 768 / 500, (y2 - y1) * 768 / 334)
        assert threshold == pytest.approx(720.384)

        sample = SPairDataset(spair_root, "test")[0]
        assert sample.record.name == line and sample.category == "aeroplane"
        np.testing.assert_allclose(sample.source_kps, src, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sample.target_kps, trg, rtol=0, atol=1e-9)
        assert sample.source_kps[0].tolist() == pytest.approx([62 * 768 / 333, 462 * 768 / 500])
        assert sample.threshold == pytest.approx(threshold, abs=1e-9)
        assert sample.source_image.shape == (500, 333, 3) and sample.source_image.dtype == np.uint8

    def test_more_than_twenty_keypoints(self, trees, spair_root, tmp_path):
        root = trees.copy_spair_tree(spair_root, tmp_path)
        path = root / "PairAnnotation/test/006394-2007_005797-2009_003189:cow.json"
        ann = json.loads(path.read_text())
        ann["src_kps"] = [[10 + i, 20 + i] for i in range(25)]
        ann["trg_kps"] = [[30 + i, 40 + i] for i in range(25)]
        path.write_text(json.dumps(ann))
        ds = SPairDataset(root, "test")
        assert ds.records[1].num_keypoints == 25
        assert ds[1].source_kps.shape == (25, 2) and ds[1].target_kps.shape == (25, 2)

    def test_missing_annotation_names_the_file(self, trees, spair_root, tmp_path):
        root = trees.copy_spair_tree(spair_root, tmp_path)
        missing = root / "PairAnnotation/test/007272-2009_001225-2011_002398:dog.json"
        missing.unlink()
        with pytest.raises(DatasetError, match="007272-2009_001225-2011_002398:dog.json.*missing"):
            SPairDataset(root, "test")

    @pytest.mark.parametrize(
        "edit, message",
        [
            (lambda a: a.pop("trg_kps"), "missing field.*trg_kps"),
            (lambda a: a.update(src_kps=[[1, 2, 3]]), r"src_kps must be a non-empty \(N, 2\)"),
            (lambda a: a.update(trg_kps=[[1, 2]]), "src_kps has 7 points but trg_kps has 1"),
            (lambda a: a.update(trg_bndbox=[1, 2]), r"trg_bndbox must be \[x1, y1, x2, y2\]"),
            (lambda a: a.update(category="dog"), "category 'dog' differs"),
        ],
    )
    def test_malformed_annotation(self, trees, spair_root, tmp_path, edit, message):
        root = trees.copy_spair_tree(spair_root, tmp_path)
        path = root / "PairAnnotation/test/000167-2008_007604-2009_001056:aeroplane.json"
        ann = json.loads(path.read_text())
        edit(ann)
        path.write_text(json.dumps(ann))
        with pytest.raises(DatasetError, match=message) as info:
            SPairDataset(root, "test")
        assert "000167-2008_007604-2009_001056:aeroplane.json" in str(info.value)

    def test_malformed_line_and_missing_image(self, trees, spair_root, tmp_path):
        root = trees.copy_spair_tree(spair_root, tmp_path)
        (root / "JPEGImages/dog/2011_002398.jpg").unlink()
        ds = SPairDataset(root, "test")
        with pytest.raises(DatasetError, match="2011_002398.jpg: image file is missing"):
            ds[2]
        (root / "Layout/large/test.txt").write_text("000167-2008_007604:aeroplane\n")
        with pytest.raises(DatasetError, match=r"test.txt:1: malformed pair line"):
            SPairDataset(root, "test")
        with pytest.raises(DatasetError, match="val.txt: SPair-71k pair list is missing"):
            SPairDataset(root, "val")


# ---------------------------------------------------------------------------------- PF-Willow


class TestPFWillow:
    def test_counts_and_categories(self, pfwillow_root):
        ds = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv")
        assert len(ds) == 900
        assert all(r.num_keypoints == 10 for r in ds.records)
        assert ds.categories == sorted(
            ["car(G)", "car(M)", "car(S)", "duck(S)", "motorbike(G)", "motorbike(M)", "motorbike(S)",
             "winebottle(M)", "winebottle(wC)", "winebottle(woC)"]
        )  # fmt: skip
        assert all(r.threshold_kind is ThresholdKind.KEYPOINTS for r in ds.records)

    def test_frame_keypoints_and_threshold_by_hand(self, pfwillow_root):
        with (pfwillow_root / "test_pairs_DERIVED.csv").open() as f:
            rows = list(csv.reader(f))
        row = rows[1]
        values = [float(v) for v in row[2:]]
        xa, ya, xb, yb = values[0:10], values[10:20], values[20:30], values[30:40]
        w0, h0 = image_size(pfwillow_root / row[0])
        w1, h1 = image_size(pfwillow_root / row[1])
        src = [[clamp(x * 768 / w0), clamp(y * 768 / h0)] for x, y in zip(xa, ya)]
        trg_raw = [[x * 768 / w1, y * 768 / h1] for x, y in zip(xb, yb)]
        trg = [[clamp(x), clamp(y)] for x, y in trg_raw]
        xs, ys = [p[0] for p in trg_raw], [p[1] for p in trg_raw]
        threshold = max(max(xs) - min(xs), max(ys) - min(ys))
        # the .mat annotation of the source image agrees with the csv row
        mat = scipy.io.loadmat(str(pfwillow_root / row[0].replace(".png", ".mat")))["pts_coord"]
        np.testing.assert_allclose(mat, [xa, ya], rtol=1e-9)

        sample = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv")[0]
        assert sample.category == "car(G)" and sample.record.source_id == "car(G)-Cars_006a"
        np.testing.assert_allclose(sample.source_kps, src, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sample.target_kps, trg, rtol=0, atol=1e-9)
        assert sample.threshold == pytest.approx(threshold, abs=1e-9)

    def test_malformed_row_and_default_name(self, pfwillow_root, tmp_path):
        with pytest.raises(DatasetError, match="test_pairs.csv: PF-Willow pair list is missing"):
            PFWillowDataset(pfwillow_root)
        bad = tmp_path / "pf-willow"
        bad.mkdir()
        lines = (pfwillow_root / "test_pairs_DERIVED.csv").read_text().splitlines()
        (bad / "test_pairs.csv").write_text("\n".join([lines[0], lines[1], ",".join(lines[2].split(",")[:30])]) + "\n")
        with pytest.raises(DatasetError, match=r"test_pairs.csv:3: expected 42 columns"):
            PFWillowDataset(bad)
        fields = lines[1].split(",")
        fields[5] = "abc"
        (bad / "test_pairs.csv").write_text("\n".join([lines[0], ",".join(fields)]) + "\n")
        with pytest.raises(DatasetError, match="test_pairs.csv:2: keypoint coordinates must be numbers"):
            PFWillowDataset(bad)


# ---------------------------------------------------------------------------------- PF-Pascal


def _pascal_row(root, split, index):
    with (root / f"{split}_pairs.csv").open() as f:
        return list(csv.DictReader(f))[index]


def _pascal_raw(root, row):
    cls = [
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
        "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    ][int(row["class"]) - 1]  # fmt: skip
    out = []
    for key in ("source_image", "target_image"):
        name = row[key].split("/")[-1]
        mat = scipy.io.loadmat(str(root / "PF-dataset-PASCAL/Annotations" / cls / name.replace(".jpg", ".mat")))
        size = image_size(root / "PF-dataset-PASCAL/JPEGImages" / name)
        out.append((mat["kps"], size))
    return cls, out


class TestPFPascal:
    def test_counts_and_categories(self, pfpascal_root):
        test = PFPascalDataset(pfpascal_root, "test")
        trn = PFPascalDataset(pfpascal_root, "trn")
        val = PFPascalDataset(pfpascal_root, "val")
        assert (len(test), len(trn), len(val)) == (3, 4, 2)
        # test rows keep exactly the csv's keypoints (the two half-hidden ones are dropped)
        with (pfpascal_root / "test_pairs.csv").open() as f:
            csv_counts = [len(r["XA"].split(";")) for r in csv.DictReader(f)]
        assert [r.num_keypoints for r in test.records] == csv_counts
        assert [r.num_keypoints for r in trn.records] == [6, 6, 6, 6]  # 8 minus one hidden per image
        assert [r.flip for r in trn.records] == [False, True, False, True]
        assert not any(r.flip for r in val.records)
        assert all(s.threshold == 768.0 for s in test)
        assert test.categories == sorted({r.category for r in test.records})

    def test_test_pair_by_hand(self, pfpascal_root):
        row = _pascal_row(pfpascal_root, "test", 0)
        cls, ((kps0, (w0, h0)), (kps1, (w1, h1))) = _pascal_raw(pfpascal_root, row)
        xa = [float(v) for v in row["XA"].split(";")]
        ya = [float(v) for v in row["YA"].split(";")]
        np.testing.assert_allclose(kps0[: len(xa)], np.stack([xa, ya], 1))  # the tree holds the csv values
        visible = ~(np.isnan(kps0).any(1) | np.isnan(kps1).any(1))
        src = [[clamp(x * 768 / w0), clamp(y * 768 / h0)] for x, y in kps0[visible]]
        trg = [[clamp(x * 768 / w1), clamp(y * 768 / h1)] for x, y in kps1[visible]]
        sample = PFPascalDataset(pfpascal_root, "test")[0]
        assert sample.category == cls == "aeroplane" and not sample.flip
        np.testing.assert_allclose(sample.source_kps, src, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sample.target_kps, trg, rtol=0, atol=1e-9)
        assert sample.threshold == 768.0

    def test_flipped_training_pair_by_hand(self, pfpascal_root):
        row = _pascal_row(pfpascal_root, "trn", 1)
        assert row["flip"] == "1"
        cls, ((kps0, (w0, h0)), (kps1, (w1, h1))) = _pascal_raw(pfpascal_root, row)
        visible = ~(np.isnan(kps0).any(1) | np.isnan(kps1).any(1))
        # official order: scale to the frame, mirror with x' = 768 - x (not 767), then clamp
        src = [[clamp(768 - x * 768 / w0), clamp(y * 768 / h0)] for x, y in kps0[visible]]
        trg = [[clamp(768 - x * 768 / w1), clamp(y * 768 / h1)] for x, y in kps1[visible]]
        sample = PFPascalDataset(pfpascal_root, "trn")[1]
        assert sample.flip and sample.record.source_id.endswith("-1")
        np.testing.assert_allclose(sample.source_kps, src, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sample.target_kps, trg, rtol=0, atol=1e-9)
        # the corner points: (0, 0) mirrors to 768 -> 767 - 1e-4; (W - 0.1, H - 0.1) mirrors near 0
        assert sample.source_kps[0].tolist() == pytest.approx([767 - 1e-4, 1e-4])
        assert sample.source_kps[1, 0] == pytest.approx(768 - (w0 - 0.1) * 768 / w0)
        assert sample.source_kps[1, 1] == pytest.approx(767 - 1e-4)
        mirrored0, _ = sample.oriented_images()
        np.testing.assert_array_equal(mirrored0, sample.source_image[:, ::-1])

    def test_unflipped_training_pair_clamps(self, pfpascal_root):
        sample = PFPascalDataset(pfpascal_root, "trn")[0]
        assert not sample.flip
        assert sample.source_kps[0].tolist() == pytest.approx([1e-4, 1e-4])
        assert sample.source_kps[1].tolist() == pytest.approx([767 - 1e-4, 767 - 1e-4])

    def test_bad_annotation_names_the_file(self, pfpascal_root, tmp_path):
        root = tmp_path / "pf-pascal"
        shutil.copytree(pfpascal_root, root)
        row = _pascal_row(root, "val", 0)
        cls, _ = _pascal_raw(root, row)
        mat = root / "PF-dataset-PASCAL/Annotations" / cls / row["source_image"].split("/")[-1].replace(".jpg", ".mat")
        scipy.io.savemat(str(mat), {"points": np.zeros((3, 2))})
        with pytest.raises(DatasetError, match=f"{mat.name}: no 'kps' variable"):
            PFPascalDataset(root, "val")
        mat.write_bytes(b"not a mat file")
        with pytest.raises(DatasetError, match=f"{mat.name}: cannot read"):
            PFPascalDataset(root, "val")
        mat.unlink()
        with pytest.raises(DatasetError, match=f"{mat.name}: PF-Pascal annotation is missing"):
            PFPascalDataset(root, "val")
        (root / "trn_pairs.csv").write_text("source_image,target_image,class\n")
        with pytest.raises(DatasetError, match=r"trn_pairs.csv: missing column\(s\) flip"):
            PFPascalDataset(root, "trn")


def test_load_dataset_by_name(spair_root):
    assert isinstance(load_dataset("spair", spair_root, "test", frame=256), SPairDataset)
    with pytest.raises(DatasetError, match="unknown dataset 'coco'"):
        load_dataset("coco", spair_root)
    with pytest.raises(DatasetError, match="unknown split 'train'"):
        load_dataset("spair", spair_root, "train")
