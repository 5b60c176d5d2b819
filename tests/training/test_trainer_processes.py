"""A run resumes on another number of processes and ends where an uninterrupted one does (docs/design.md §8.8, §11.4).

Acceptance: kill a 2-process run mid-training and resume it with 1 process, and the other way
round; the final prompt equals an uninterrupted run's (within 1e-5 relative: the processes sum
the gradient in another order).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import multiprocess  # tests/, on pytest's pythonpath
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.training.checkpoint import load_state, save_state
from sd4match_sdk.training.cli import main
from training_runs import STEPS, assert_same_prompt, saved_prompt, saved_step, train_args


def signal_after_the_first_state(process: subprocess.Popen, out: Path, signum: int) -> None:
    """Send ``signum`` as soon as the run has saved a finished step (it is then inside the next)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if (out / "state.pt").is_file() and saved_step(out) >= 1:
            process.send_signal(signum)
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {process.communicate()[1][-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no state was saved within 10 minutes")


def test_a_two_process_run_stopped_by_sigterm_resumes_on_one(reference_trajectory, tiny_sd, spair_root, tmp_path):
    out = tmp_path / "run"
    args = train_args(spair_root, tiny_sd, out)
    process = multiprocess.popen_torchrun("sd4match_sdk.training", args)
    signal_after_the_first_state(process, out, signal.SIGTERM)  # torchrun passes it to both processes
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "(rank 0 of 2): interrupted; rerun the same command to resume" in stderr
    stopped = saved_step(out)
    assert 1 <= stopped < STEPS  # both processes stopped after the same, unfinished step and saved it
    assert_same_prompt(saved_prompt(out), reference_trajectory[stopped], reference_trajectory[stopped - 1])

    assert main(args) == 0  # one process continues
    assert saved_step(out) == STEPS
    assert_same_prompt(saved_prompt(out), reference_trajectory[STEPS], reference_trajectory[STEPS - 1])


def test_a_killed_one_process_run_resumes_on_two(reference_trajectory, tiny_sd, spair_root, tmp_path):
    out = tmp_path / "run"
    args = train_args(spair_root, tiny_sd, out)
    process = subprocess.Popen([sys.executable, "-m", "sd4match_sdk.training", *args], cwd=multiprocess.ROOT,
                               env=multiprocess.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    signal_after_the_first_state(process, out, signal.SIGKILL)  # no chance to save anything
    process.communicate(timeout=60)
    killed_at = saved_step(out)
    assert 1 <= killed_at < STEPS

    result = multiprocess.torchrun("sd4match_sdk.training", args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"resuming at step {killed_at}" in result.stdout
    assert saved_step(out) == STEPS
    assert_same_prompt(saved_prompt(out), reference_trajectory[STEPS], reference_trajectory[STEPS - 1])


def test_a_state_of_the_old_noise_stream_is_refused(tmp_path):
    path = save_state(tmp_path / "state.pt", {"step": 3})
    state = load_state(path)
    assert state["step"] == 3
    torch.save({**state, "format": "sd4match-train-state/1"}, path)
    with pytest.raises(ConfigError, match="training noise came from one generator"):
        load_state(path)
