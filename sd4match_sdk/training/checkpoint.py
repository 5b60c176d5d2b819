"""The resumable training state: one file, written atomically, read without running code.

``state.pt`` holds everything a run needs to continue exactly where it stopped: the step, the
prompt parameters, Adam's moments, the fp16 grad scaler, the best validation score and the
validation history, and the config it was trained with. The data order and the training noise
are functions of ``(seed, step)`` (docs/design.md §8.8), so no generator state is needed, and a run
resumes the same way on any number of processes. Under torchrun only rank 0 writes it. It is written
with ``torch.save`` to a temporary file and renamed over the old one, so a kill at any moment
leaves either the previous or the new state, never a torn file; it is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .config import TrainConfig

__all__ = ["STATE_FORMAT", "save_state", "load_state", "check_resumable"]

#: Version 2: per-pair noise seeded by (seed, step, position); version 1 drew from one generator.
STATE_FORMAT = "sd4match-train-state/2"


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": STATE_FORMAT, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_state`.

    Raises:
        ConfigError: the file is unreadable or not a training state.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ConfigError(f"{path}: cannot read the training state ({err}); delete it to start over") from None
    if isinstance(state, dict) and state.get("format") == "sd4match-train-state/1":
        raise ConfigError(
            f"{path} was written by an older sd4match-sdk whose training noise came from one generator; "
            "this version cannot continue that noise stream: train into another output_dir (or delete the state)"
        )
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path}: not an sd4match training state (format {STATE_FORMAT} expected)")
    return state


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: str | os.PathLike) -> None:
    """Refuse to resume a run whose computation-defining settings changed.

    Paths, device, workers, checkpoint cadence, the run length and the validation subset may
    change; anything else (prompt kind, batch, lr, timestep, seed, ...) would silently mix two
    experiments in one output directory.
    """
    current = config.to_dict()
    changed = [
        f"{k}: {saved.get(k)!r} -> {current[k]!r}"
        for k in current
        if k not in TrainConfig.RESUMABLE_CHANGES and saved.get(k) != current[k]
    ]
    if changed:
        raise ConfigError(
            f"{path} was written by a run with other settings ({'; '.join(changed)}); "
            "use another output_dir, or restore those settings to resume"
        )
