"""SPair-71k in its native layout: values computed by hand from the fixture files (docs/design.md §10.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sd4match_sdk.data import SPairDataset, load_dataset
from sd4match_sdk.errors import DatasetError

from dataset_trees import clamp, image_size


ANNOTATION = "000167-2008_007604-2009_001056:aeroplane.json"


def assert_edited_annotation_refused(trees, spair_root, tmp_path, edit, message) -> None:
    """Edit one pair's annotation in a copy of the fixture: loading the split names the file and the problem."""
    root = trees.copy_spair_tree(spair_root, tmp_path)
    path = root / "PairAnnotation/test" / ANNOTATION
    ann = json.loads(path.read_text())
    edit(ann)
    path.write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=message) as info:
        SPairDataset(root, "test")
    assert ANNOTATION in str(info.value)


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
        assert_edited_annotation_refused(trees, spair_root, tmp_path, edit, message)

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


def test_load_dataset_by_name(spair_root):
    assert isinstance(load_dataset("spair", spair_root, "test", frame=256), SPairDataset)
    with pytest.raises(DatasetError, match="unknown dataset 'coco'"):
        load_dataset("coco", spair_root)
    with pytest.raises(DatasetError, match="unknown split 'train'"):
        load_dataset("spair", spair_root, "train")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.update(src_kps=[["12", 30]] * 7), r"src_kps must be a rectangular list of numbers \(got .*fix or remove this annotation"),
        (lambda a: a.update(trg_kps=[[1, 2], [3]] * 3 + [[4, 5]]), r"trg_kps must be a rectangular list of numbers"),
        (lambda a: a.update(src_kps=[[True, 1]] * 7), r"src_kps must be a rectangular list of numbers"),
        (lambda a: a.update(src_kps=[[None, 1]] * 7), r"src_kps must be a rectangular list of numbers"),
        (lambda a: a.update(trg_bndbox={"x1": 1}), r"trg_bndbox must be a rectangular list of numbers"),
        (lambda a: a.update(trg_bndbox=["a", "b", "c", "d"]), r"trg_bndbox must be a rectangular list of numbers"),
        (lambda a: a.update(trg_bndbox=[300, 10, 100, 200]), r"trg_bndbox \[300\.0, 10\.0, 100\.0, 200\.0\] is degenerate \(needs x2 > x1 and y2 > y1\); fix the box or remove the pair"),
        (lambda a: a.update(src_bndbox=[10, 10, 10, 50]), r"src_bndbox \[10\.0, 10\.0, 10\.0, 50\.0\] is degenerate"),
        (lambda a: a.update(trg_bndbox=[10, 60, 100, 50]), r"trg_bndbox .* is degenerate"),
    ],
    ids=["string-coordinate", "ragged", "bool", "null", "box-object", "box-strings", "box-x2-below-x1", "box-zero-width", "box-y2-below-y1"],
)
def test_non_numeric_ragged_and_degenerate_annotations(edit, message, trees, spair_root, tmp_path):
    assert_edited_annotation_refused(trees, spair_root, tmp_path, edit, message)


@pytest.mark.parametrize(
    "content, message",
    [(b"\xff\xfe\x00 not text", r"test\.txt: not a text file .*restore the SPair-71k pair list"), (None, r"expected a JSON object")],
    ids=["binary-layout", "json-list"],
)
def test_unreadable_files(content, message, trees, spair_root, tmp_path):
    root = trees.copy_spair_tree(spair_root, tmp_path)
    if content is None:
        (root / "PairAnnotation/test/000167-2008_007604-2009_001056:aeroplane.json").write_text("[1, 2]")
    else:
        (root / "Layout/large/test.txt").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        SPairDataset(root, "test")
