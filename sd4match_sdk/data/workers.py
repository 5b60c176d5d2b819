"""How many DataLoader processes decode images on this machine, shared by training and evaluation.

Worker processes pay off when the model leaves CPUs idle (a GPU run); on a small CPU-only
machine they compete with the model for the same cores (docs/design.md §13.19, which also says
how the commands start them).
"""

from __future__ import annotations

import os

__all__ = ["available_cpus", "loader_workers"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int, cpus: int | None = None) -> int:
    """The DataLoader workers of ``requested``: itself when >= 0; for -1 (auto), 0 on 2 CPUs or
    fewer (measured: 4 workers on 2 cores made a training step 3.5x slower than none), else
    ``min(4, cpus - 1)``, leaving one CPU to the model's own loop."""
    if requested >= 0:
        return requested
    cpus = cpus or available_cpus()
    return 0 if cpus <= 2 else min(4, cpus - 1)
