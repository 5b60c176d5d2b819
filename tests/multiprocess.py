"""Launching the SDK's entry points on several processes in tests: torchrun, or one process per rank by hand.

torchrun is started as ``python -m torch.distributed.run --standalone`` (the same program as the
``torchrun`` script, with this interpreter; ``--standalone`` picks a free rendezvous port, so
parallel test runs do not collide). It sets ``OMP_NUM_THREADS=1`` for its workers, so a
one-process reference that must match bit for bit runs with one thread too (:func:`one_thread`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def environment(**extra: str) -> dict[str, str]:
    """The test process's environment, offline, plus ``extra``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error")
    env.update(extra)
    return env


def torchrun_command(module: str, args: Sequence[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module,
            *map(str, args)]  # fmt: skip


def torchrun(module: str, args: Sequence[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun -m module args`` to the end.

    Past ``timeout`` torchrun gets SIGTERM, which it passes on to its workers (each runs in a
    session of its own, so a SIGKILL of torchrun alone would leave them running), and then
    ``subprocess.TimeoutExpired`` is raised.
    """
    command = torchrun_command(module, args, nproc)
    with subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def popen_torchrun(module: str, args: Sequence[str], nproc: int = 2) -> subprocess.Popen:
    """Start ``torchrun -m module args`` without waiting."""
    return subprocess.Popen(torchrun_command(module, args, nproc), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_hand(module: str, args_per_rank: Sequence[Sequence[str]]) -> list[subprocess.Popen]:
    """One process per rank with the env:// variables torchrun would set, each with its own arguments."""
    port, world = free_port(), len(args_per_rank)
    processes = []
    for rank, args in enumerate(args_per_rank):
        env = environment(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
        processes.append(subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    return processes


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, as torchrun's workers (float sums depend on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def join_by_hand(rank: int, port: int, world: int = 2):
    """Inside a spawned worker: the env:// variables of ``rank``, then :func:`init_distributed`."""
    from sd4match_sdk.distributed import init_distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    return init_distributed(timeout_s=120)


def spawn(worker, port: int, world: int = 2) -> list:
    """Run ``worker(rank, port, queue)`` on ``world`` spawned processes; their queued results by rank."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(worker, args=(port, queue), nprocs=world, join=True, start_method="spawn")
    results = dict(queue.get() for _ in range(world))
    return [results[rank] for rank in range(world)]


def collectives_worker(rank: int, port: int, queue) -> None:
    """What tests/test_distributed.py checks, on one rank of two."""
    from sd4match_sdk.distributed import close_distributed
    from sd4match_sdk.errors import DistributedError

    distributed = join_by_hand(rank, port)
    out: dict = {}
    # uneven first dimensions, one rank with nothing, metadata alongside
    local = torch.full((rank + 1, 2), float(rank)) if rank == 0 else None
    out["exchange"] = [(None if t is None else t.tolist(), m) for t, m in
                       distributed.exchange(lambda: (local, f"meta{rank}"), "a test", torch.device("cpu"))]  # fmt: skip
    both = distributed.exchange(lambda: (torch.full((rank + 1, 2), float(rank)), None), "a test", torch.device("cpu"))
    out["uneven"] = [t.tolist() for t, _ in both]
    out["broadcast"] = distributed.broadcast_from_main(lambda: {"step": 7}, "a test")
    try:
        with distributed.together("reading the dataset"):
            if rank == 1:
                raise ValueError("no such directory")
        out["together"] = None
    except DistributedError as err:
        out["together"] = f"DistributedError: {err}"
    except ValueError as err:
        out["together"] = f"ValueError: {err}"
    try:
        distributed.broadcast_from_main(lambda: (_ for _ in ()).throw(OSError("state unreadable")), "reading the state")
        out["broadcast_error"] = None
    except (DistributedError, OSError) as err:
        out["broadcast_error"] = f"{type(err).__name__}: {err}"
    out["sum"] = distributed.all_reduce_sum(torch.tensor([1.0 + rank])).tolist()
    close_distributed(distributed)
    queue.put((rank, out))


def reduce_step_worker(rank: int, port: int, queue) -> None:
    """What tests/training/test_gradients.py checks, on one rank of two."""
    from torch import nn

    from sd4match_sdk.distributed import close_distributed
    from sd4match_sdk.training.gradients import reduce_step

    distributed = join_by_hand(rank, port)
    out = {}
    for case in ("sum", "failure"):
        params = [nn.Parameter(torch.zeros(3)) for _ in range(3)]
        if rank == 0:  # p0 only here, p1 on both ranks, p2 nowhere (a Class prompt's absent category)
            params[0].grad = torch.tensor([1.0, 2.0, 3.0])
            params[1].grad = torch.full((3,), 0.5)
        else:
            params[1].grad = torch.full((3,), 0.25)
        failed = case == "failure" and rank == 1
        outcome = reduce_step(params, 0.5 + rank, stop=rank == 1, failed=failed, distributed=distributed,
                              device=torch.device("cpu"))  # fmt: skip
        out[case] = ([None if p.grad is None else p.grad.tolist() for p in params], outcome)
    close_distributed(distributed)
    queue.put((rank, out))
