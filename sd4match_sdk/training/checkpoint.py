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
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import ConfigError
from .config import TrainConfig

__all__ = ["STATE_FORMAT", "save_state", "load_state", "check_resumable", "check_state"]

#: Version 2: per-pair noise seeded by (seed, step, position); version 1 drew from one generator.
STATE_FORMAT = "sd4match-train-state/2"
_START_OVER = "delete it (or pass another --out) to start the run over"


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by :func:`save_state`.

    Raises:
        ConfigError: the file is unreadable or not a training state.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (pickle, zip, EOF, OS)
        raise ConfigError(f"{path}: cannot read the training state ({type(err).__name__}: {err}); {_START_OVER}") from None
    if isinstance(state, dict) and state.get("format") == "sd4match-train-state/1":
        raise ConfigError(
            f"{path} was written by an older sd4match-sdk whose training noise came from one generator; "
            "this version cannot continue that noise stream: train into another output_dir (or delete the state)"
        )
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{path}: not an sd4match training state (format {found!r}, {STATE_FORMAT!r} expected); {_START_OVER}")
    return state


def _damaged(path: str | os.PathLike, problem: str) -> ConfigError:
    return ConfigError(f"{path}: the training state is damaged ({problem}); {_START_OVER}")


def check_state(state: dict[str, Any], path: str | os.PathLike, prompt: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Check a loaded state against the run it would resume, before anything is restored.

    Every key :meth:`Trainer.save_state` writes must be there with its type; the prompt
    parameters must have the names and shapes of ``prompt``; the optimiser state the parameter
    groups and shapes of ``optimizer``.

    Raises:
        ConfigError: the first problem found, with how to start over.
    """
    types = {"step": int, "prompt": dict, "optimizer": dict, "best_score": (int, float), "best_step": int,
             "validations": list, "config": dict}  # fmt: skip
    for key, kind in types.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise _damaged(path, f"{key!r} is {type(state.get(key)).__name__}, expected {getattr(kind, '__name__', 'a number')}")
    if state["step"] < 0 or not (state.get("scaler") is None or isinstance(state["scaler"], dict)):
        raise _damaged(path, f"step {state['step']} or scaler {type(state.get('scaler')).__name__} is invalid")
    if not all(isinstance(v, dict) and {"step", "score"} <= set(v) for v in state["validations"]):
        raise _damaged(path, "the validation history is not a list of {step, score} records")
    expected = {k: tuple(v.shape) for k, v in prompt.state_dict().items()}
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in state["prompt"].items()}
    if found != expected:
        raise _damaged(path, f"prompt parameters {found} differ from this run's {expected}")
    _check_optimizer_state(state["optimizer"], optimizer, path)


def _check_optimizer_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Parameter groups, sizes and the per-parameter moment shapes of a saved optimiser."""
    groups, moments = saved.get("param_groups"), saved.get("state")
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if not isinstance(groups, list) or not isinstance(moments, dict) or [len(g.get("params", ())) for g in groups] != sizes:
        raise _damaged(path, f"the optimiser state does not have this run's parameter groups {sizes}")
    shapes = [tuple(p.shape) for g in optimizer.param_groups for p in g["params"]]
    for index, entry in moments.items():
        if not isinstance(index, int) or not 0 <= index < len(shapes) or not isinstance(entry, dict):
            raise _damaged(path, f"the optimiser state has an entry for parameter {index!r} this run does not have")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and tuple(value.shape) != shapes[index]:
                raise _damaged(path, f"optimiser {name} of parameter {index} is {tuple(value.shape)}, the parameter {shapes[index]}")


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
