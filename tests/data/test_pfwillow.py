"""PF-Willow in its native layout: values computed by hand from the fixture files (docs/design.md §10.4)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import scipy.io

from sd4match_sdk.data import PFWillowDataset, ThresholdKind
from sd4match_sdk.errors import DatasetError

from dataset_trees import clamp, image_size



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


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.__setitem__(slice(22, 42), ["10"] * 20), r"test_pairs.csv:2: the imageB keypoints all coincide \(zero PCK threshold\); fix or remove the row"),
        (lambda f: f.__setitem__(7, "nan"), r"test_pairs.csv:2: imageA keypoints contains NaN or infinite coordinates; fix or remove"),
        (lambda f: f.__setitem__(30, "inf"), r"imageB keypoints contains NaN or infinite"),
    ],
    ids=["coincident-targets", "nan", "inf"],
)
def test_degenerate_rows(change, message, pfwillow_root, tmp_path):
    bad = tmp_path / "pf-willow"
    bad.mkdir()
    lines = (pfwillow_root / "test_pairs_DERIVED.csv").read_text().splitlines()
    fields = lines[1].split(",")
    change(fields)
    (bad / "test_pairs.csv").write_text("\n".join([lines[0], ",".join(fields)]) + "\n")
    with pytest.raises(DatasetError, match=message):
        PFWillowDataset(bad)


def test_a_binary_pair_list(tmp_path):
    (tmp_path / "test_pairs.csv").write_bytes(b"imageA,imageB\n\xff\xfe\xfa\n")
    with pytest.raises(DatasetError, match=r"test_pairs.csv: not a readable pair list .*restore the file"):
        PFWillowDataset(tmp_path)
