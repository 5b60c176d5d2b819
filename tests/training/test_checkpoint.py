"""A training state.pt is validated before a run resumes from it (docs/design.md §11.4, §13.17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.training.checkpoint import check_state, load_state, save_state

START_OVER = r"delete it \(or pass another --out\) to start the run over"


def prompt_and_optimizer(shape=(1, 75, 8)):
    prompt = torch.nn.ParameterDict({"tokens": torch.nn.Parameter(torch.zeros(shape))})
    optimizer = torch.optim.Adam(prompt.parameters(), lr=1e-2)
    prompt["tokens"].grad = torch.ones(shape)
    optimizer.step()  # creates exp_avg / exp_avg_sq
    return prompt, optimizer


def good_state() -> dict:
    prompt, optimizer = prompt_and_optimizer()
    return {
        "format": "sd4match-train-state/2", "step": 3, "prompt": {k: v.detach() for k, v in prompt.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scaler": None,
        "best_score": 0.5, "best_step": 2, "validations": [{"step": 2, "score": 0.5, "seconds": 1.0}], "config": {},
    }  # fmt: skip


def _edit(key, value):
    def edit(state):
        state[key] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("optimizer"), r"'optimizer' is NoneType, expected dict"),
        (_edit("step", "3"), r"'step' is str, expected int"),
        (_edit("step", -1), r"step -1 or scaler NoneType is invalid"),
        (_edit("config", [1]), r"'config' is list, expected dict"),
        (_edit("prompt", {"tokens": torch.zeros(1, 70, 8)}), r"prompt parameters \{'tokens': \(1, 70, 8\)\} differ from this run's \{'tokens': \(1, 75, 8\)\}"),
        (_edit("prompt", {"other": torch.zeros(1, 75, 8)}), r"prompt parameters .*'other'"),
        (_edit("best_score", "0.5"), r"'best_score' is str, expected a number"),
        (lambda s: s["optimizer"]["param_groups"].append({"params": [1]}), r"the optimiser state does not have this run's parameter groups \[1\]"),
        (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)), r"optimiser exp_avg of parameter 0 is \(3,\), the parameter \(1, 75, 8\)"),
        (lambda s: s["optimizer"]["state"].update({7: {}}), r"the optimiser state has an entry for parameter 7 this run does not have"),
        (_edit("validations", [3]), r"the validation history is not a list of \{step, score\} records"),
    ],
    ids=["missing-key", "step-type", "step-negative", "config-type", "prompt-shape", "prompt-keys", "score-type", "groups",
         "moment-shape", "moment-index", "validations"],
)  # fmt: skip
def test_damaged_states_are_refused(edit, message, tmp_path):
    state = good_state()
    edit(state)
    path = save_state(tmp_path / "state.pt", state)
    prompt, optimizer = prompt_and_optimizer()
    with pytest.raises(ConfigError, match=rf"state\.pt: the training state is damaged \({message}.*\); {START_OVER}"):
        check_state(load_state(path), path, prompt, optimizer)


def test_a_good_state_passes(tmp_path):
    prompt, optimizer = prompt_and_optimizer()
    path = save_state(tmp_path / "state.pt", good_state())
    check_state(load_state(path), path, prompt, optimizer)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"cannot read the training state"),
        (b"PK\x03\x04 truncated zip", r"cannot read the training state"),
        (None, r"not an sd4match training state \(format 'other'"),
        ([1, 2], r"not an sd4match training state \(format 'list'"),
    ],
    ids=["empty", "truncated", "other-format", "not-a-dict"],
)
def test_unreadable_states_are_refused(content, message, tmp_path: Path):
    path = tmp_path / "state.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"format": "other"} if content is None else content, path)
    with pytest.raises(ConfigError, match=rf"{message}.*{START_OVER}"):
        load_state(path)


def test_a_truncated_real_state_stops_the_cli_with_how_to_start_over(tiny_sd, spair_root, tmp_path, capsys):
    from sd4match_sdk.training.cli import main

    out = tmp_path / "run"
    args = ["--prompt", "single", "--root", str(spair_root), "--out", str(out), "--model", str(tiny_sd), "--steps", "1",
            "--set", "image_size=256", "--set", "batch_size=2", "--set", "num_workers=0", "--set", "train_split=test",
            "--set", "val_split=", "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main(args) == 0
    state = out / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "state.pt: cannot read the training state" in err and "to start the run over" in err and "Traceback" not in err
