"""TensorBoard scalars of a training run (optional: without the ``tensorboard`` package, no logs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["log_step", "open_tensorboard"]


def open_tensorboard(output_dir: Path, step: int) -> Any:
    """A ``SummaryWriter`` under ``output_dir/tb`` that drops events after ``step`` (a resumed
    run rewrites what a killed one logged past its saved state), or ``None`` with a note when
    TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("sd4match-train: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(output_dir / "tb"), purge_step=step or None)


def log_step(writer: Any, step: int, loss: float, learning_rates: Sequence[float], seconds: float) -> None:
    """The scalars of one optimiser step: loss, each parameter group's lr, steps per second."""
    writer.add_scalar("train/loss", loss, step)
    for i, lr in enumerate(learning_rates):
        writer.add_scalar(f"train/lr_group{i}", lr, step)
    writer.add_scalar("train/steps_per_second", 1.0 / max(seconds, 1e-9), step)
