"""PF-Pascal in its native layout, on a tree built from the real pair csvs: values by hand (docs/design.md §10.3)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import scipy.io

from sd4match_sdk.data import PFPascalDataset
from sd4match_sdk.errors import DatasetError

from dataset_trees import clamp, image_size



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


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"kps": np.array([["a", "b"]]), "bbox": np.array([[1.0, 2.0, 30.0, 40.0]])}, r"'kps' must be a rectangular list of numbers"),
        ({"kps": np.zeros((3, 2)), "bbox": np.array([[50.0, 2.0, 30.0, 40.0]])}, r"'bbox' \[50\.0, 2\.0, 30\.0, 40\.0\] is degenerate \(needs x2 > x1 and y2 > y1\)"),
        ({"kps": np.zeros((3, 2)), "bbox": np.array([[1.0, 2.0, 30.0, np.inf]])}, r"'bbox' must be \[x1, y1, x2, y2\] of finite numbers"),
        ({"kps": np.full((3, 2), np.inf), "bbox": np.array([[1.0, 2.0, 30.0, 40.0]])}, r"'kps' must be N x 2 finite numbers \(NaN where invisible\)"),
        ({"kps": np.zeros((3, 2)), "bbox": np.zeros((0, 4))}, r"'bbox' must have rows of x1, y1, x2, y2"),
    ],
    ids=["string-kps", "degenerate-box", "infinite-box", "infinite-kps", "no-box-row"],
)
def test_non_numeric_and_degenerate_annotations(variables, message, pfpascal_root, tmp_path):
    root = tmp_path / "pf-pascal"
    shutil.copytree(pfpascal_root, root)
    row = _pascal_row(root, "test", 0)
    cls, _ = _pascal_raw(root, row)
    mat = root / "PF-dataset-PASCAL/Annotations" / cls / row["source_image"].split("/")[-1].replace(".jpg", ".mat")
    scipy.io.savemat(str(mat), variables)
    with pytest.raises(DatasetError, match=f"{mat.name}: {message}"):
        PFPascalDataset(root, "test")


def test_a_binary_pair_list(pfpascal_root, tmp_path):
    root = tmp_path / "pf-pascal"
    shutil.copytree(pfpascal_root, root)
    (root / "test_pairs.csv").write_bytes(b"source_image,target_image,class\n\xff\xfe,\xfa,1\n")
    with pytest.raises(DatasetError, match=r"test_pairs.csv: not a readable pair list .*restore the file"):
        PFPascalDataset(root, "test")
