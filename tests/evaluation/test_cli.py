"""``sd4match-eval`` end to end on the fixtures, its paper comparison, and its errors (docs/design.md §9, §12)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import multiprocess  # tests/, on pytest's pythonpath

from sd4match_sdk.evaluation.cli import main
from sd4match_sdk.prompts import PromptKind, PromptWeights, save_prompt

FAST = ["--image-size", "256", "--ensemble", "1", "--no-progress"]


@pytest.fixture()
def single_prompt(tmp_path):
    """A Single prompt for the tiny model, recording (as ours do) that it was tuned on SPair-71k."""
    weights = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0))})
    return save_prompt(tmp_path / "single_spair.safetensors", weights, dataset="spair")


def test_eval_cli_on_pfwillow(tiny_sd, pfwillow_root, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
                 "--model", str(tiny_sd), "--timestep", "50", "--max-pairs", "8", "--alpha", "0.05", "0.1", "0.15",
                 "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("SD4Match PCK (%) on pfwillow test (8 pairs, keypoints threshold, mean over pairs)")
    assert len(lines[1].split()) == 9 and lines[1].split()[-1] == "All"  # --max-pairs 8: 8 categories, not 8 rows of one
    assert [line.split()[0] for line in lines[2:6]] == ["PCK@0.05", "PCK@0.1", "PCK@0.15", "pairs"]
    assert f"wrote {out} (PCK stored as fractions)" in printed
    payload = json.loads(out.read_text())
    settings = payload["settings"]
    assert settings["dataset"] == "pfwillow" and settings["timestep"] == 50 and settings["device"] == "cpu"
    assert settings["pair_list"] == "test_pairs_DERIVED.csv" and payload["pck_unit"].startswith("fraction")
    assert payload["num_pairs"] == 8 and len(payload["pairs"]) == 8
    for alpha in ("0.05", "0.1", "0.15"):
        per_pair = [p["pck"][alpha] for p in payload["pairs"]]
        assert all(v * 10 == round(v * 10) for v in per_pair)  # 10 keypoints per PF-Willow pair
        assert payload["pck"][alpha]["all"] == pytest.approx(np.mean(per_pair))
        printed_all = float(lines[2 + ["0.05", "0.1", "0.15"].index(alpha)].split()[-1])
        assert printed_all == pytest.approx(100 * np.mean(per_pair), abs=0.051)  # one decimal, percent


def test_compare_paper_on_spair_with_a_plot(tiny_sd, spair_root, single_prompt, tmp_path, capsys):
    out, plot = tmp_path / "r.json", tmp_path / "cmp.png"
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", str(tiny_sd), "--prompt", str(single_prompt),
                 "--alpha", "0.05", "0.1", "--out", str(out), "--compare-paper", "--plot", str(plot), *FAST]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Beside the paper: SD4Match-Single tuned on SPair-71k, evaluated on SPair-71k" in printed
    assert "Table 2 (docs/design.md §12.2) and Table 3 (docs/design.md §12.3)" in printed
    block = printed[printed.index("per category, PCK@0.1:"):].splitlines()
    assert block[1].split() == ["aero", "cow", "dog", "motor", "All"]  # the fixture's 4 categories
    paper = [float(v) for v in block[3].split()[1:]]
    assert block[3].split()[0] == "paper" and paper == [72.1, 85.0, 71.9, 68.5, 72.6]
    ours, diff = [float(v) for v in block[2].split()[1:]], [float(v) for v in block[4].split()[1:]]
    assert diff == pytest.approx([o - p for o, p in zip(ours, paper)], abs=0.11)
    results = json.loads(out.read_text())
    assert 100 * results["pck"]["0.1"]["all"] == pytest.approx(ours[-1], abs=0.051)
    assert results["settings"]["prompt_trained_on"] == "spair"
    picture = cv2.imread(str(plot))
    assert picture is not None and picture.shape[0] == 460 and picture.shape[1] >= 520


def test_compare_paper_table3_on_pfwillow(tiny_sd, pfwillow_root, single_prompt, capsys):
    assert main(["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
                 "--model", str(tiny_sd), "--prompt", str(single_prompt), "--max-pairs", "2", "--compare-paper", *FAST]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "SD4Match-Single tuned on SPair-71k, evaluated on PF-Willow; Li et al., CVPR 2024 (arXiv 2310.17569), Table 3" in printed
    rows = printed[printed.index("all:"):].splitlines()
    assert rows[1].split() == ["PCK@0.05", "PCK@0.1", "PCK@0.15"] and rows[3].split() == ["paper", "55.5", "81.3", "91.2"]


def test_compare_paper_errors_come_before_the_model(tiny_sd, spair_root, pfwillow_root, single_prompt, tmp_path, capsys):
    missing = str(tmp_path / "no-model")  # never loaded: every error below comes first
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", missing, "--compare-paper", *FAST]) == 2
    assert "cannot tell which dataset the prompt '(empty)' was tuned on: pass --trained-on" in capsys.readouterr().err
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", missing, "--prompt", "a photo",
                 "--trained-on", "spair", "--compare-paper"]) == 2  # fmt: skip
    assert "the paper reports no PCK for a text prompt" in capsys.readouterr().err
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", missing, "--plot", "x.png"]) == 2
    assert "--plot draws the paper comparison: pass --compare-paper too" in capsys.readouterr().err
    embeds = {c: torch.zeros(1, 77, 32) for c in ("aeroplane", "cow", "dog", "motorbike")}
    class_prompt = save_prompt(tmp_path / "class.safetensors", PromptWeights(PromptKind.CLASS, token_embeds=embeds),
                               dataset="pfpascal")  # fmt: skip
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", missing, "--prompt", str(class_prompt),
                 "--compare-paper"]) == 2  # fmt: skip
    assert "no PCK for a class prompt tuned on pfpascal and evaluated on spair" in capsys.readouterr().err
    del embeds["cow"]  # a Class prompt must know every category of the benchmark
    save_prompt(class_prompt, PromptWeights(PromptKind.CLASS, token_embeds=embeds))
    assert main(["--dataset", "spair", "--root", str(spair_root), "--model", missing, "--prompt", str(class_prompt)]) == 2
    assert "unknown category 'cow'" in capsys.readouterr().err


def test_eval_cli_errors(spair_root, pfwillow_root, tmp_path, capsys):
    assert main(["--dataset", "spair", "--root", str(tmp_path / "nowhere")]) == 2
    assert "spair root directory is missing" in capsys.readouterr().err
    assert main(["--dataset", "spair", "--root", str(spair_root), "--pair-list", "x.csv"]) == 2
    assert "--pair-list applies to --dataset pfwillow only" in capsys.readouterr().err


TIMING = ("seconds", "pairs_per_second")


def without_timing(text: str) -> str:
    """The JSON text without its timing lines (the only fields allowed to differ between runs)."""
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith(tuple(f'"{t}"' for t in TIMING)))


def assert_two_processes_write_one_process_json(args: list, tmp_path) -> dict:
    two = multiprocess.torchrun("sd4match_sdk.evaluation", [*args, "--out", tmp_path / "two.json"])
    assert two.returncode == 0, two.stderr[-4000:]
    assert "| 2 processes" in two.stdout
    with multiprocess.one_thread():  # torchrun's workers run one thread each; float sums depend on it
        assert main([*map(str, args), "--out", str(tmp_path / "one.json")]) == 0
    one_text, two_text = (tmp_path / "one.json").read_text(), (tmp_path / "two.json").read_text()
    one, two = json.loads(one_text), json.loads(two_text)
    assert {k for k in one if one[k] != two[k]} <= set(TIMING)
    assert one["pairs"] == two["pairs"] and one["pck"] == two["pck"]  # matched keypoints bit for bit
    assert without_timing(one_text) == without_timing(two_text)  # byte-identical but for the timing
    return one


def test_two_processes_on_pfwillow_equal_one(tiny_sd, pfwillow_root, tmp_path):
    args = ["--dataset", "pfwillow", "--root", pfwillow_root, "--pair-list", "test_pairs_DERIVED.csv", "--model", tiny_sd,
            "--image-size", "256", "--ensemble", "2", "--max-pairs", "16", "--batch-size", "3", "--workers", "1",
            "--alpha", "0.05", "0.1", "0.5", "--no-progress"]  # fmt: skip
    payload = assert_two_processes_write_one_process_json(args, tmp_path)
    assert payload["num_pairs"] == 16 and payload["settings"]["batch_size"] == 3
    assert any(p["pck"]["0.5"] > 0 for p in payload["pairs"])


def test_two_processes_on_spair_with_a_cpm_prompt_equal_one(tiny_sd, tiny_dino, cpm_prompt_file, spair_root, tmp_path):
    args = ["--dataset", "spair", "--root", spair_root, "--model", tiny_sd, "--prompt", cpm_prompt_file, "--dino", tiny_dino,
            "--image-size", "256", "--ensemble", "1", "--batch-size", "1", "--workers", "0", "--no-progress"]  # fmt: skip
    payload = assert_two_processes_write_one_process_json(args, tmp_path)
    assert payload["settings"]["prompt_kind"] == "cpm" and payload["num_pairs"] == 4


def test_the_module_is_the_command(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps the help to the terminal width
    module = subprocess.run([sys.executable, "-m", "sd4match_sdk.evaluation", "--help"], capture_output=True, text=True,
                            env=multiprocess.environment(COLUMNS="100"), timeout=300)  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--help"])
    assert module.returncode == 0 and module.stdout == capsys.readouterr().out
    assert module.stdout.startswith("usage: sd4match-eval")


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
        (["--workers", "-1"], r"--workers must be >= 0 \(got -1\)"),
    ],
    ids=["alpha", "seed", "device", "out-below-a-file", "out-is-a-folder", "workers"],
)


def test_user_errors_are_one_line_before_the_model_loads(extra, message, pfwillow_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("a regular file")
    extra = [e.format(file=tmp_path / "taken", dir=tmp_path) for e in extra]
    args = ["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
            "--model", str(tmp_path / "no-model"), *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("sd4match-eval: error:") and "Traceback" not in err
    # the shipped PF-Willow fixture has another pair list than test_pairs.csv: the error names the flag
    assert main(["--dataset", "pfwillow", "--root", str(pfwillow_root)]) == 2
    err = capsys.readouterr().err
    assert "pass the pair list with --pair-list FILE" in err and "test_pairs_DERIVED.csv" in err


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("auto (CUDA when available; default)", "engine directory", "official:NAME", "spread over the categories",
                   "default kernel_softargmax", "none on 2 CPUs or fewer", "--compare-paper", "--plot", "--trained-on", "--verbose", "--version"):  # fmt: skip
        assert phrase in text, phrase


@pytest.mark.parametrize("flag, expected", [([], None), (["--workers", "1"], 1)], ids=["auto", "explicit"])
def test_workers_reach_the_runner(flag, expected, tiny_sd, pfwillow_root, monkeypatch, capsys):
    """Without --workers the runner gets the machine-sized count training uses; with it, the value given."""
    from sd4match_sdk.data.workers import loader_workers
    from sd4match_sdk.errors import ConfigError
    from sd4match_sdk.evaluation import runner

    def stop_with_workers(*args, workers, **kwargs):  # the evaluation itself is tested above
        raise ConfigError(f"runner called with workers={workers}")

    monkeypatch.setattr(runner, "evaluate", stop_with_workers)
    args = ["--dataset", "pfwillow", "--root", str(pfwillow_root), "--pair-list", "test_pairs_DERIVED.csv",
            "--model", str(tiny_sd), *FAST, *flag]  # fmt: skip
    assert main(args) == 2
    assert f"runner called with workers={loader_workers(-1) if expected is None else expected}" in capsys.readouterr().err
