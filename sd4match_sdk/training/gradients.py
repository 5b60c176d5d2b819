"""One all-reduce per step: the gradient summed over the processes, and what they must agree on (docs/design.md §8.8).

Every process has, after its micro-batches, the gradient of *its* pairs' summed losses divided by
the step's pair count. Summing these over the processes gives the gradient of the mean loss over
the whole step, whatever the split. The sum travels as one float64 vector::

    [ every parameter's gradient (zeros where it has none) | one "has a gradient" flag per parameter |
      stop requested | step failed | loss ]

- A parameter no process gave a gradient (a Class prompt whose category is not in the step)
  keeps ``grad = None``, so Adam leaves it alone, as in one process; one with a gradient on any
  process gets the sum.
- float64 makes the sum of two float32 shares exactly the correctly rounded float32 sum.
- The flags let every process stop after the same step (a SIGTERM reached some of them) or
  raise together when one process's step failed, instead of waiting for it forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import Distributed

__all__ = ["StepOutcome", "reduce_step"]


@dataclass(frozen=True)
class StepOutcome:
    """What the processes agreed on after a step.

    Attributes:
        loss: the step's loss (mean over all its pairs).
        stop: some process asked to stop after this step.
        failed: how many processes' steps raised (their gradients were left out).
    """

    loss: float
    stop: bool
    failed: int


def reduce_step(
    parameters: Sequence[nn.Parameter], loss: float, stop: bool, failed: bool, distributed: Distributed, device: torch.device
) -> StepOutcome:
    """Sum the gradients of ``parameters`` and the flags over the processes (in place).

    Args:
        parameters: the trainable parameters (their ``.grad`` is replaced by the sum).
        loss: this process's share of the step's loss.
        stop: this process was asked to stop.
        failed: this process's step raised (it contributes no gradient).
        distributed: the processes.
        device: where the parameters live (the all-reduce runs there: NCCL on CUDA, gloo on the CPU).
    """
    if not distributed.active:
        return StepOutcome(loss, stop, int(failed))
    params = list(parameters)
    has_grad = [p.grad is not None and not failed for p in params]
    pieces = [p.grad.reshape(-1).double() if has else torch.zeros(p.numel(), dtype=torch.float64, device=device)
              for p, has in zip(params, has_grad)]  # fmt: skip
    flags = torch.tensor([*has_grad, stop, failed, loss], dtype=torch.float64, device=device)
    buffer = distributed.all_reduce_sum(torch.cat([*pieces, flags]))
    tail = buffer[-len(flags) :].tolist()
    offset = 0
    for p, count in zip(params, tail[: len(params)]):
        size = p.numel()
        p.grad = buffer[offset : offset + size].view(p.shape).to(p.dtype) if count > 0 else None
        offset += size
    return StepOutcome(loss=float(tail[-1]), stop=tail[-3] > 0, failed=int(round(tail[-2])))
