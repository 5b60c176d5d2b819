"""Many processes with ``torch.distributed``, launched by ``torchrun`` (docs/design.md §8.8, §9.5).

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_distributed` joins that process group (gloo for
CPU tensors and, when CUDA is present, NCCL for CUDA tensors) and returns a :class:`Distributed`,
the one object the trainer and the evaluation runner talk to. Without ``torchrun`` it returns a
single-process :class:`Distributed` whose collectives hand back their input, so both run the same
code whatever the number of processes.

The collectives carry failures (:meth:`Distributed.agree`, :meth:`Distributed.exchange`): a rank
whose work raised tells the others, it re-raises its own error and every other rank raises
:class:`~sd4match_sdk.errors.DistributedError`, so a bad launch ends every process with a message
instead of a hang (docs/design.md §8.8).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .checks import resolve_device
from .errors import ConfigError, DistributedError

__all__ = ["DEFAULT_TIMEOUT_S", "Distributed", "close_distributed", "device_for_rank", "init_distributed", "shard_range"]

T = TypeVar("T")

#: How long a collective waits for the slowest rank before failing (seconds). Model loading
#: before the first collective can take minutes on a cold hub cache, hence not less.
DEFAULT_TIMEOUT_S = 1800.0


@contextlib.contextmanager
def _lost_contact(what: str) -> Iterator[None]:
    """A collective whose peer died (gloo: "Connection closed by peer") raises :class:`DistributedError`."""
    try:
        yield
    except RuntimeError as err:  # torch.distributed.DistError and gloo's plain RuntimeError
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise DistributedError(
            f"a collective failed while {what} ({first_line}); another process probably failed or was "
            "stopped: see its message"
        ) from None


def shard_range(count: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(count)`` that ``rank`` of ``world_size`` takes.

    Blocks differ in length by at most one, the longer ones first: ``shard_range(9, r, 2)`` is
    ``0..4`` and ``5..8``. A rank past ``count`` gets an empty range.
    """
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def device_for_rank(name: str, local_rank: int = 0) -> torch.device:
    """The device a process computes on: ``auto`` is CUDA when available, else the CPU; ``auto``
    and ``cuda`` mean this node's GPU number ``local_rank`` (one GPU per process under torchrun);
    an explicit ``cuda:k`` is taken as given.

    Raises:
        ConfigError: an invalid device or CUDA asked for but absent
            (:func:`sd4match_sdk.checks.resolve_device`), or more processes on a node than GPUs.
    """
    device = resolve_device(name)
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"process {local_rank} of this node has no GPU of its own ({count} visible); "
            f"start at most {count} processes per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run, and the collectives the trainer and runner use.

    Attributes:
        rank: this process, ``0 .. world_size - 1``; rank 0 writes every output file.
        world_size: number of processes (1: no process group, every collective returns its input).
        local_rank: this process on its node (selects its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process: collectives really communicate."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes files and shows progress."""
        return self.rank == 0

    def describe(self) -> str:
        """``"rank 1 of 2"``, for messages."""
        return f"rank {self.rank} of {self.world_size}"

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks, in place (on its own device: NCCL for CUDA, gloo for CPU)."""
        if self.active:
            with _lost_contact("summing over the processes"):
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        with _lost_contact("exchanging results"):
            dist.all_gather_object(out, value)
        return out

    def agree(self, error: BaseException | None, what: str) -> None:
        """Tell every rank whether this one failed at ``what``; raise on every rank if any did.

        The failing rank re-raises ``error``; the others raise :class:`DistributedError` naming the
        failed rank and its message. Every rank must call it at the same point.
        """
        if not self.active:
            if error is not None:
                raise error
            return
        messages = self.gather_objects(None if error is None else f"{type(error).__name__}: {error}")
        self._raise_failures(messages, error, what)

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block on every rank, then :meth:`agree` on whether it raised anywhere."""
        try:
            yield
        except Exception as err:  # any failure must reach the other ranks, not only ours
            self.agree(err, what)
            raise
        self.agree(None, what)

    def broadcast_from_main(self, compute: Callable[[], T], what: str) -> T:
        """``compute()`` run on rank 0 only, its result sent to every rank (or its error raised on all)."""
        if not self.active:
            return compute()
        value, error = None, None
        if self.is_main:
            try:
                value = compute()
            except Exception as err:  # sent to the other ranks below
                error = err
        message = [None if error is None else f"{type(error).__name__}: {error}", value]
        with _lost_contact(what):
            dist.broadcast_object_list(message, src=0)
        if error is not None:
            raise error
        if message[0] is not None:
            raise DistributedError(f"rank 0 failed while {what} ({message[0]}); every rank stops")
        return message[1]

    def exchange(
        self, compute: Callable[[], tuple[Tensor | None, Any]], what: str, device: torch.device
    ) -> list[tuple[Tensor | None, Any]]:
        """Every rank's ``compute()`` result, ``(tensor or None, picklable meta)``, on every rank in rank order.

        The tensors may differ in their first dimension but not in the others; they travel on
        ``device`` (this process's compute device; NCCL for CUDA, gloo for the CPU) and arrive
        there. A ``compute`` that raises on any rank raises on every rank (see :meth:`agree`).
        """
        local, meta, error = None, None, None
        try:
            local, meta = compute()
        except Exception as err:  # reported to every rank by the header exchange
            error = err
        if not self.active:
            if error is not None:
                raise error
            return [(local, meta)]
        header = None if local is None else (tuple(local.shape), local.dtype)
        headers = self.gather_objects((None if error is None else f"{type(error).__name__}: {error}", header, meta))
        self._raise_failures([h[0] for h in headers], error, what)
        shapes = [h[1] for h in headers]
        present = [s for s in shapes if s is not None]
        if not present:
            return [(None, h[2]) for h in headers]
        (first_shape, dtype), rows = present[0], max(s[0][0] for s in present)
        padded = torch.zeros((rows, *first_shape[1:]), dtype=dtype, device=device)
        if local is not None:
            padded[: local.shape[0]] = local.to(device)
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        with _lost_contact(what):
            dist.all_gather(gathered, padded)
        return [(None if s is None else g[: s[0][0]], h[2]) for g, s, h in zip(gathered, shapes, headers)]

    def _raise_failures(self, messages: Sequence[str | None], error: BaseException | None, what: str) -> None:
        failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
        if not failed:
            return
        if error is not None:
            raise error
        rank, message = failed[0]
        raise DistributedError(
            f"rank {rank} of {self.world_size} failed while {what} ({message}); every rank stops: "
            "fix the cause on that rank and start again"
        )


def init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S) -> Distributed:
    """Join the process group ``torchrun`` set up (env:// rendezvous), or run alone without one.

    Raises:
        DistributedError: the environment names a multi-process run but the rendezvous fails.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return Distributed()
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise DistributedError(
            f"WORLD_SIZE={world_size} but RANK is missing or not a number; launch with torchrun "
            "(or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process)"
        ) from None
    if not dist.is_initialized():
        # gloo carries CPU tensors and every object collective; NCCL the CUDA tensors.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as err:
            raise DistributedError(
                f"rank {rank} of {world_size} could not join the process group ({err}); check that every "
                "process got the same MASTER_ADDR/MASTER_PORT (torchrun --rdzv-endpoint) and can reach it"
            ) from None
    return Distributed(rank, world_size, local_rank)


def close_distributed(distributed: Distributed) -> None:
    """Leave the process group joined by :func:`init_distributed` (nothing without one)."""
    if distributed.active and dist.is_initialized():
        dist.destroy_process_group()
