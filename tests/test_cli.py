"""The `sd4match` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sd4match_sdk.cli import main, parse_points
from sd4match_sdk.errors import PointsError


def test_parse_points() -> None:
    assert parse_points("1,2;3.5, 4") == [[1.0, 2.0], [3.5, 4.0]]
    with pytest.raises(PointsError, match="entry 1"):
        parse_points("1,2;3")


def test_match_writes_json_and_picture(tiny_sd: Path, demo_pair, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, js = tmp_path / "m.png", tmp_path / "m.json"
    code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "100,200;500,500", "--model", str(tiny_sd),
                 "--seed", "0", "--ensemble", "1", "--out", str(out), "--json", str(js)])
    assert code == 0
    payload = json.loads(js.read_text())
    assert len(payload["points"]) == 2 and payload["query"] == [[100.0, 200.0], [500.0, 500.0]]
    import cv2

    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] == 480


def test_errors_exit_2_with_message(tiny_sd: Path, demo_pair, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["match", str(tmp_path / "missing.jpg"), str(demo_pair[1]), "--points", "1,2", "--model", str(tiny_sd)])
    assert code == 2
    assert "image file not found" in capsys.readouterr().err
    code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "5000,2", "--model", str(tiny_sd)])
    assert code == 2
    assert "outside the image" in capsys.readouterr().err


def test_demo_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--ensemble", "1"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "RANDOM weights" in text and "--model" in text
