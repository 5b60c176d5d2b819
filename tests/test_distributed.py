"""torch.distributed for the trainer and the runner: shards, devices, and collectives that carry failures (docs/design.md §8.8)."""

from __future__ import annotations

import pytest
import torch

import multiprocess  # tests/, on pytest's pythonpath
from sd4match_sdk.distributed import Distributed, device_for_rank, init_distributed, shard_range
from sd4match_sdk.errors import ConfigError


def test_shards_cover_a_step_in_contiguous_blocks():
    assert [list(shard_range(9, r, 2)) for r in range(2)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert [list(shard_range(2, r, 3)) for r in range(3)] == [[0], [1], []]  # more ranks than pairs
    for count in range(12):
        for world in range(1, 5):
            blocks = [list(shard_range(count, r, world)) for r in range(world)]
            assert sum(blocks, []) == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_devices():
    assert device_for_rank("cpu", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert device_for_rank("auto", 1) == torch.device("cpu")
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            device_for_rank("cuda", 0)
    with pytest.raises(ConfigError, match="invalid device 'tpu9'"):
        device_for_rank("tpu9")


def test_one_process_collectives_return_their_input(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = init_distributed()
    assert alone == Distributed() and not alone.active and alone.is_main
    assert alone.gather_objects({"a": 1}) == [{"a": 1}]
    assert alone.exchange(lambda: (torch.ones(2), "m"), "x", torch.device("cpu"))[0][1] == "m"
    assert alone.broadcast_from_main(lambda: 5, "x") == 5
    with pytest.raises(ValueError, match="boom"), alone.together("x"):
        raise ValueError("boom")


def test_two_processes_exchange_agree_and_fail_together():
    rank0, rank1 = multiprocess.spawn(multiprocess.collectives_worker, multiprocess.free_port())
    for out in (rank0, rank1):
        assert out["exchange"] == [([[0.0, 0.0]], "meta0"), (None, "meta1")]
        assert out["uneven"] == [[[0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]
        assert out["broadcast"] == {"step": 7}
        assert out["sum"] == [3.0]
    # the failing rank keeps its own error; the other names it and stops too
    assert rank1["together"] == "ValueError: no such directory"
    assert rank0["together"].startswith("DistributedError: rank 1 of 2 failed while reading the dataset "
                                        "(ValueError: no such directory); every rank stops")  # fmt: skip
    assert rank0["broadcast_error"] == "OSError: state unreadable"
    assert rank1["broadcast_error"].startswith("DistributedError: rank 0 failed while reading the state (OSError")
