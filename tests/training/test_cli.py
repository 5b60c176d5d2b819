"""``sd4match-train`` end to end for every prompt kind, and its errors (docs/design.md §8)."""

from __future__ import annotations

import json
import subprocess
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import multiprocess  # tests/, on pytest's pythonpath
import training_runs

from sd4match_sdk import Matcher
from sd4match_sdk.prompts import PromptKind, load_prompt
from sd4match_sdk.training.cli import main

CONFIGS = Path(__file__).parents[2] / "training" / "configs"
FAST = ["--set", "image_size=256", "--set", "batch_size=2", "--set", "num_workers=0", "--no-progress"]


def metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def test_single_on_spair(tiny_sd, spair_root, tmp_path, capsys):
    out = tmp_path / "single"
    code = main(["--config", str(CONFIGS / "single_spair.toml"), "--root", str(spair_root), "--out", str(out),
                 "--model", str(tiny_sd), "--steps", "3", "--set", "train_split=test", "--set", "val_split=test",
                 "--set", "val_every=2", *FAST])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "single prompt on spair test (4 pairs), 3 steps of 2 pairs" in printed and "t=261" in printed
    for name in ("state.pt", "last.safetensors", "best.safetensors", "config.json", "validation.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars"
    meta = metadata(out / "last.safetensors")
    assert meta["kind"] == "single" and meta["timestep"] == "261" and meta["train_step"] == "3"
    history = json.loads((out / "validation.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 3]
    matcher = Matcher.from_pretrained(str(tiny_sd), prompt=str(out / "best.safetensors"), image_size=256, ensemble=1)
    assert matcher.prompt_kind is PromptKind.SINGLE
    result = matcher.match(np.zeros((40, 50, 3), np.uint8), np.zeros((30, 20, 3), np.uint8), [[10, 10]], seed=0)
    assert result.points.shape == (1, 2)
    # rerunning the finished command resumes and has nothing left to do
    assert main(["--config", str(CONFIGS / "single_spair.toml"), "--root", str(spair_root), "--out", str(out),
                 "--model", str(tiny_sd), "--steps", "3", "--set", "train_split=test", "--set", "val_split=test",
                 "--set", "val_every=2", *FAST]) == 0  # fmt: skip
    assert "resuming at step 3" in capsys.readouterr().out


def test_class_on_pfpascal_with_flips(tiny_sd, pfpascal_root, tmp_path):
    out = tmp_path / "class"
    code = main(["--config", str(CONFIGS / "class_pfpascal.toml"), "--root", str(pfpascal_root), "--out", str(out),
                 "--model", str(tiny_sd), "--steps", "2", "--set", "micro_batch_size=1", *FAST])  # fmt: skip
    assert code == 0
    weights = load_prompt(out / "last.safetensors")
    trn = [line.split(",")[2] for line in (pfpascal_root / "trn_pairs.csv").read_text().splitlines()[1:]]
    from sd4match_sdk.data import PFPASCAL_CATEGORIES

    assert weights.kind is PromptKind.CLASS
    assert weights.categories == sorted(PFPASCAL_CATEGORIES[int(c) - 1] for c in set(trn))
    matcher = Matcher.from_pretrained(str(tiny_sd), prompt=str(out / "last.safetensors"), image_size=256, ensemble=1)
    assert matcher.categories == weights.categories


def test_cpm_on_spair(tiny_sd, tiny_dino, spair_root, tmp_path):
    out = tmp_path / "cpm"
    cache = tmp_path / "dino-cache"
    code = main(["--config", str(CONFIGS / "cpm_spair.toml"), "--root", str(spair_root), "--out", str(out),
                 "--model", str(tiny_sd), "--dino", str(tiny_dino), "--steps", "2",
                 "--set", "train_split=test", "--set", "val_split=test", "--set", "val_max_pairs=1",
                 "--set", f"dino_cache={cache}", *FAST])  # fmt: skip
    assert code == 0
    assert len(list(cache.glob("*.safetensors"))) == 8  # 4 pairs x 2 images, no flips
    weights = load_prompt(out / "best.safetensors")
    assert weights.kind is PromptKind.CPM and set(weights.cpm_state) == {
        "global_embeds", "positional_embedding", "alpha_cond", "linear_C.weight", "linear_C.bias",
        "linear_N.weight", "linear_N.bias",
    }  # fmt: skip
    assert weights.cpm_state["global_embeds"].shape == (1, 25, 32)
    matcher = Matcher.from_pretrained(
        str(tiny_sd), prompt=str(out / "best.safetensors"), dino=str(tiny_dino), image_size=256, ensemble=1
    )
    assert matcher.prompt_kind is PromptKind.CPM


def test_start_line_says_the_real_step_size_and_workers(tiny_sd, spair_root, tmp_path, capsys):
    """The SPair fixture has 4 test pairs: a batch of 9 gives steps of 4 (docs/training.md, "Try it")."""
    out = tmp_path / "single9"
    code = main(["--config", str(CONFIGS / "single_spair.toml"), "--root", str(spair_root), "--out", str(out),
                 "--model", str(tiny_sd), "--steps", "1", "--set", "train_split=test", "--set", "val_split=",
                 "--set", "image_size=256", "--set", "micro_batch_size=4", "--no-progress", "--no-tensorboard"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    from sd4match_sdk.data.workers import available_cpus, loader_workers

    workers = loader_workers(-1)
    assert "(4 pairs), 1 steps of 4 pairs (micro-batch 4)" in printed
    assert f"{workers} loader workers on {available_cpus()} CPUs" in printed


def test_cli_errors(tmp_path, capsys):
    assert main(["--prompt", "single", "--out", str(tmp_path)]) == 2
    assert "pass --root DIR" in capsys.readouterr().err
    assert main(["--config", str(CONFIGS / "single_spair.toml"), "--root", str(tmp_path), "--set", "batch_size=nine"]) == 2
    assert "batch_size must be a int" in capsys.readouterr().err
    assert main(["--config", str(CONFIGS / "single_spair.toml"), "--root", str(tmp_path), "--set", "batchsize=9"]) == 2
    assert "unknown config key(s) batchsize" in capsys.readouterr().err


def test_the_module_is_the_command(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps the help to the terminal width
    module = subprocess.run([sys.executable, "-m", "sd4match_sdk.training", "--help"], capture_output=True, text=True,
                            env=multiprocess.environment(COLUMNS="100"), timeout=300)  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--help"])
    assert module.returncode == 0 and module.stdout == capsys.readouterr().out
    assert module.stdout.startswith("usage: sd4match-train")


def test_a_rank_without_the_dataset_stops_every_rank(tiny_sd, spair_root, tmp_path):
    good = training_runs.train_args(spair_root, tiny_sd, tmp_path / "out")
    bad = training_runs.train_args(tmp_path / "nowhere", tiny_sd, tmp_path / "out")
    processes = multiprocess.by_hand("sd4match_sdk.training", [good, bad])  # as on two nodes, one lacking the data
    try:
        errors = [p.communicate(timeout=300)[1] for p in processes]  # a hang would wait for the 30 min timeout
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [2, 2]
    assert f"sd4match-train: error (rank 1 of 2): {tmp_path / 'nowhere'}: spair root directory is missing" in errors[1]
    assert ("sd4match-train: error (rank 0 of 2): rank 1 of 2 failed while reading the config and the dataset "
            "(DatasetError: ") in errors[0]  # fmt: skip
    assert not (tmp_path / "out").exists()  # nothing was started
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "{file}/run"], r"--out '.*/run': '.*taken' is a file, not a folder; choose another directory"),
        (["--out", "{file}"], r"--out '.*taken': '.*taken' is a file, not a folder"),
        (["--device", "gpu"], r"invalid device 'gpu'; use 'cpu', 'cuda'"),
        (["--set", "seed=1.5"], r"seed must be a int \(got '1\.5'\)"),
        (["--set", "val_alpha=2"], r"val_alpha must lie in \(0, 1\] \(got 2\.0\)"),
        (["--set", "beta=nan"], r"beta must be a finite number > 0 \(got nan\)"),
        (["--config", "{tmp}"], r"cannot read the config file '.*' \(.*\); pass a readable TOML file"),
    ],
    ids=["out-below-a-file", "out-is-a-file", "device", "seed", "alpha", "beta-nan", "config-is-a-folder"],
)


def test_user_errors_are_one_line(extra, message, tmp_path, capsys):
    (tmp_path / "taken").write_text("a regular file")
    extra = [e.format(file=tmp_path / "taken", tmp=tmp_path) for e in extra]
    args = ["--prompt", "single", "--root", str(tmp_path), "--model", str(tmp_path / "no-model"), *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.startswith("sd4match-train: error:") and "Traceback" not in err
