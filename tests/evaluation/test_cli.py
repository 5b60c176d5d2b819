"""``sd4match-eval`` end to end on the fixtures, and its errors (docs/design.md §9)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sd4match_sdk.evaluation.cli import main


def test_eval_cli_on_pfwillow(tiny_sd, pfwillow_root, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
                 "--model", str(tiny_sd), "--image-size", "256", "--ensemble", "1", "--timestep", "50",
                 "--max-pairs", "8", "--alpha", "0.05", "0.1", "0.15", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("SD4Match PCK on pfwillow test (8 pairs, keypoints threshold, mean over pairs)")
    assert lines[1].split() == ["car(G)", "All"]
    assert [line.split()[0] for line in lines[2:6]] == ["PCK@0.05", "PCK@0.1", "PCK@0.15", "pairs"]
    payload = json.loads(out.read_text())
    assert payload["settings"]["dataset"] == "pfwillow" and payload["settings"]["timestep"] == 50
    assert payload["num_pairs"] == 8 and len(payload["pairs"]) == 8
    for alpha in ("0.05", "0.1", "0.15"):
        per_pair = [p["pck"][alpha] for p in payload["pairs"]]
        assert all(v * 10 == round(v * 10) for v in per_pair)  # 10 keypoints per PF-Willow pair
        assert payload["pck"][alpha]["all"] == pytest.approx(np.mean(per_pair))
        printed_all = float(lines[2 + ["0.05", "0.1", "0.15"].index(alpha)].split()[-1])
        assert printed_all == pytest.approx(100 * np.mean(per_pair), abs=0.051)  # one decimal


def test_eval_cli_errors(spair_root, tmp_path, capsys):
    assert main(["--dataset", "spair", "--root", str(tmp_path / "nowhere")]) == 2
    assert "spair root directory is missing" in capsys.readouterr().err
    assert main(["--dataset", "spair", "--root", str(spair_root), "--pair-list", "x.csv"]) == 2
    assert "--pair-list applies to --dataset pfwillow only" in capsys.readouterr().err


def test_eval_cli_runs_an_engine_with_its_own_settings(engine_single, pfwillow_root, tmp_path):
    """No --image-size/--ensemble/--timestep: the engine's (256 px, E=2, t=50) apply, frame included."""
    out = tmp_path / "engine.json"
    assert main(["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
                 "--model", str(engine_single), "--max-pairs", "1", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    settings = json.loads(out.read_text())["settings"]
    assert (settings["frame"], settings["ensemble"], settings["timestep"]) == (256, 2, 50)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--alpha", "0.1", "1.5"], r"alpha must lie in \(0, 1\] \(got 1\.5\); PCK alphas are fractions"),
        (["--seed", str(2**64)], r"--seed 18446744073709551616 is outside the generator's range"),
        (["--device", "gpu"], r"invalid device 'gpu'; use 'cpu', 'cuda'"),
        (["--out", "{file}/results.json"], r"--out '.*/results\.json': '.*taken' is a file, not a folder; choose another path"),
        (["--out", "{dir}"], r"--out '.*' is a folder; give a file name"),
    ],
    ids=["alpha", "seed", "device", "out-below-a-file", "out-is-a-folder"],
)
def test_user_errors_are_one_line_before_the_model_loads(extra, message, pfwillow_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("a regular file")
    extra = [e.format(file=tmp_path / "taken", dir=tmp_path) for e in extra]
    args = ["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
            "--model", str(tmp_path / "no-model"), *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("sd4match-eval: error:") and "Traceback" not in err
