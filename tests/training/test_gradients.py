"""A step's gradient is the mean over all its pairs however they are split: processes and micro-batches (docs/design.md §8.8).

Acceptance: 2 processes (torchrun, gloo) for k steps at global batch 4 give the prompt of 1 process
at global batch 4 within 1e-5 relative, and so does 1 process with micro-batch 1.
"""

from __future__ import annotations

import multiprocess  # tests/, on pytest's pythonpath
import training_runs
from training_runs import STEPS, assert_same_prompt, saved_prompt, saved_step, train_args


def test_the_sum_keeps_absent_gradients_none_and_carries_the_flags():
    ranks = multiprocess.spawn(multiprocess.reduce_step_worker, multiprocess.free_port())
    for out in ranks:
        grads, outcome = out["sum"]
        assert grads == [[1.0, 2.0, 3.0], [0.75] * 3, None]  # p2 had no gradient anywhere: Adam leaves it alone
        assert (outcome.loss, outcome.stop, outcome.failed) == (2.0, True, 0)  # losses summed, rank 1 asked to stop
        grads, outcome = out["failure"]
        assert grads[1] == [0.5] * 3 and outcome.failed == 1  # a failed rank adds nothing and is counted


def test_two_processes_give_the_prompt_of_one(reference_trajectory, tiny_sd, spair_root, tmp_path):
    out = tmp_path / "two"
    result = multiprocess.torchrun("sd4match_sdk.training", train_args(spair_root, tiny_sd, out))
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{STEPS} steps of 4 pairs on 2 processes" in result.stdout
    assert saved_step(out) == STEPS
    assert_same_prompt(saved_prompt(out), reference_trajectory[STEPS], reference_trajectory[STEPS - 1])


def test_micro_batches_of_one_give_the_prompt_of_the_whole_batch(reference_trajectory, tiny_sd, spair_root, tmp_path):
    micro = training_runs.reference_trajectory(tiny_sd, spair_root, tmp_path, steps=2, micro_batch_size="1")
    for step in (1, 2):
        assert_same_prompt(micro[step], reference_trajectory[step], reference_trajectory[step - 1])
