"""Training configuration: one frozen dataclass, read from a TOML file plus ``key=value`` overrides.

The defaults are the faithful settings (docs/design.md §8, §13.3): t = 261, ensemble 1, Adam with a
constant lr of 1e-2 (1e-3 for the CPM's linear layers g_d and g_n), batch 9 with the gradient
averaged over all 9 pairs, validation by nearest-neighbour PCK@0.1 on the val split once per
epoch. ``training/configs/`` holds one file per paper setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from ..checks import check_fraction, check_int, check_positive_float, check_seed
from ..distributed import device_for_rank
from ..errors import ConfigError
from ..prompts import PromptKind

__all__ = ["TrainConfig", "TrainPrecision", "TRAINABLE_KINDS", "autocast_dtype", "load_train_config", "parse_override", "resolve_device"]

#: The prompt kinds that can be trained (a text prompt has nothing to learn).
TRAINABLE_KINDS = (PromptKind.SINGLE, PromptKind.CLASS, PromptKind.CPM)


class TrainPrecision(StrEnum):
    """How the forward pass runs: ``auto`` is fp16 autocast on CUDA (as the official scripts) and
    float32 on the CPU."""

    AUTO = "auto"
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on ``device``; ``None`` means full float32 (always on the CPU)."""
        if device.type != "cuda":
            return None
        return {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[self.value]


def autocast_dtype(precision: str | TrainPrecision, device: torch.device) -> torch.dtype | None:
    """:meth:`TrainPrecision.autocast_dtype` of a precision name."""
    return TrainPrecision(precision).autocast_dtype(device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun ``auto``/``cuda`` is the node's GPU
    ``local_rank`` (:func:`~sd4match_sdk.distributed.device_for_rank`).

    Raises:
        ConfigError: an invalid device, CUDA asked for but not available, or more processes on a
            node than GPUs.
    """
    return device_for_rank(name, local_rank)


def _enum_value(name: str, value: Any, enum: type[StrEnum], allowed: tuple | None = None) -> StrEnum:
    choices = allowed or tuple(enum)
    try:
        member = enum(value)
    except ValueError:
        member = None
    if member not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(str(c) for c in choices)} (got {value!r})")
    return member  # type: ignore[return-value]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        prompt: ``single``, ``class`` or ``cpm``.
        dataset: ``spair`` or ``pfpascal`` (``pfwillow`` has no training split); the CLI loads it by
            this name, a :class:`~.trainer.Trainer` given datasets only records it.
        root: the dataset directory (``.../SPair-71k``, ``.../pf-pascal``).
        output_dir: checkpoints, training state and TensorBoard logs.
        model: SD 2.1 diffusers directory or hub id (empty: ``$SD4MATCH_SD_MODEL`` or the mirror).
        dino: DINOv2 directory or hub id for CPM (empty: ``facebook/dinov2-base``).
        train_split, val_split: dataset splits.
        epochs: passes over the training pairs (SPair 5, PF-Pascal 90: about 30k steps at batch 9).
        max_steps: stop after this many optimiser steps instead (0: ``epochs`` decides).
        batch_size: pairs per optimiser step (9), all processes together: under torchrun each
            process takes a contiguous block of the step's pairs (docs/design.md §8.8).
        micro_batch_size: pairs per forward/backward on each process; every micro-batch divides its
            summed pair losses by the step's number of pairs, so the accumulated (and, with several
            processes, all-reduced) gradient is the mean over all its pairs whatever the split
            (0: a process's whole share at once).
        lr: Adam learning rate of the prompt tokens and CPM embeddings (1e-2).
        network_lr: Adam learning rate of the CPM's g_d and g_n (1e-3).
        timestep: diffusion timestep of training and validation features (261).
        ensemble: noise draws per image in training and validation (1).
        image_size: side of the square model frame (768).
        beta: softmax temperature of the loss (0.04).
        label_kernel, label_sigma: the Gaussian label (7 x 7, sigma 1.5 cells).
        precision: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp16``, ``bf16`` or ``fp32``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...; under torchrun
            ``auto`` and ``cuda`` give each process its own GPU (``cuda:LOCAL_RANK``).
        val_every: validate every N steps (0: once per epoch, as the official scripts).
        val_max_pairs: validate on the first N pairs of the val split only (0: all).
        val_alpha: PCK alpha used for model selection (0.1).
        checkpoint_every: write the resumable training state every N steps (also after each
            validation and at the end).
        seed: seeds the prompt initialisation, the data order, the training noise and validation.
        num_workers: DataLoader worker processes (per training process) that decode and resize
            images; -1 (default): 0 on machines with 2 CPUs or fewer (workers there cost more than
            they save), else ``min(4, CPUs - 1)`` (:func:`~sd4match_sdk.data.workers.loader_workers`).
        gradient_checkpointing: recompute UNet activations in the backward pass (less memory).
        dino_cache: directory for cached DINOv2 tokens of the CPM (empty: in memory only).
        cpm_global, cpm_cond: CPM global and conditional prompt lengths (25, 50).
    """

    prompt: PromptKind = PromptKind.SINGLE
    dataset: str = "spair"
    root: str = ""
    output_dir: str = "runs/sd4match"
    model: str = ""
    dino: str = ""
    train_split: str = "trn"
    val_split: str = "val"
    epochs: int = 5
    max_steps: int = 0
    batch_size: int = 9
    micro_batch_size: int = 0
    lr: float = 1e-2
    network_lr: float = 1e-3
    timestep: int = 261
    ensemble: int = 1
    image_size: int = 768
    beta: float = 0.04
    label_kernel: int = 7
    label_sigma: float = 1.5
    precision: TrainPrecision = TrainPrecision.AUTO
    device: str = "auto"
    val_every: int = 0
    val_max_pairs: int = 0
    val_alpha: float = 0.1
    checkpoint_every: int = 100
    seed: int = 0
    num_workers: int = -1
    gradient_checkpointing: bool = False
    dino_cache: str = ""
    cpm_global: int = 25
    cpm_cond: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", _enum_value("prompt", self.prompt, PromptKind, TRAINABLE_KINDS))
        if not self.dataset:
            raise ConfigError("dataset must name the benchmark (spair, pfpascal, pfwillow)")
        object.__setattr__(self, "precision", _enum_value("precision", self.precision, TrainPrecision))
        for f in fields(self):  # integers are integers (2.5 is not truncated), floats finite numbers
            if f.type == "int":
                object.__setattr__(self, f.name, check_int(f.name, getattr(self, f.name)))
        object.__setattr__(self, "seed", check_seed(self.seed))
        positive = {"batch_size": self.batch_size, "image_size": self.image_size, "ensemble": self.ensemble,
                    "label_kernel": self.label_kernel, "checkpoint_every": self.checkpoint_every}  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1 (got {value})")
        for name in ("epochs", "max_steps", "micro_batch_size", "val_every", "val_max_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.num_workers < -1:
            raise ConfigError(f"num_workers must be >= 0, or -1 for auto (got {self.num_workers})")
        if self.epochs == 0 and self.max_steps == 0:
            raise ConfigError("set epochs or max_steps")
        if self.label_kernel % 2 == 0:
            raise ConfigError(f"label_kernel must be odd (got {self.label_kernel})")
        for name in ("lr", "network_lr", "beta", "label_sigma"):
            object.__setattr__(self, name, check_positive_float(name, getattr(self, name)))
        object.__setattr__(self, "val_alpha", check_fraction("val_alpha", self.val_alpha))
        if not 0 <= self.timestep < 1000:
            raise ConfigError(f"timestep must lie in [0, 1000) (got {self.timestep})")
        if self.image_size % 64:
            raise ConfigError(f"image_size must be a multiple of 64 (got {self.image_size})")

    @property
    def micro_batch(self) -> int:
        """Pairs per forward/backward pass."""
        return self.micro_batch_size or self.batch_size

    def steps_per_epoch(self, num_pairs: int) -> int:
        """``ceil(num_pairs / batch_size)``: the last batch of an epoch may be smaller."""
        return max(1, math.ceil(num_pairs / self.batch_size))

    def total_steps(self, num_pairs: int) -> int:
        return self.max_steps or self.epochs * self.steps_per_epoch(num_pairs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (enums as their strings): what ``config.json`` and the state record."""
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in dataclasses.asdict(self).items()}

    #: Fields that may change when a run is resumed (they do not change what is computed).
    RESUMABLE_CHANGES = ("output_dir", "root", "model", "dino", "device", "num_workers", "dino_cache",
                         "max_steps", "epochs", "checkpoint_every", "val_max_pairs")  # fmt: skip


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} must be true or false (got {value!r})")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__} (got {value!r})") from None


def parse_override(text: str) -> tuple[str, str]:
    """``"key=value"`` -> ``(key, value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value")
    return key.strip(), value.strip()


def load_train_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Read a TOML config (flat ``key = value`` table) and apply overrides.

    Args:
        path: the TOML file, or ``None`` for the defaults.
        **overrides: field values; strings are converted to the field's type.

    Raises:
        ConfigError: unreadable file, unknown key or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {str(path)!r}; check the path (training/configs/ has one per paper setting)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the config file {str(path)!r} ({err}); pass a readable TOML file") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err}); fix the line it names") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    types = {f.name: f.type for f in fields(TrainConfig)}
    kinds = {"str": str, "int": int, "float": float, "bool": bool, "PromptKind": str, "TrainPrecision": str}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(types))}")
    converted = {k: _coerce(k, v, kinds[str(types[k])]) for k, v in values.items()}
    return TrainConfig(**converted)
