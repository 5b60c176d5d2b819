"""Which dtype each SD part runs in, and how float32 stays exact on CUDA (docs/design.md §13.20).

On CUDA the UNet, the text encoder and the VAE encoder run in float16 by default, as the
official test script's ``torch.autocast(float16)`` runs them (docs/design.md §3.6); on the CPU
everything is float32. ``dtype=`` and ``vae_dtype=`` override either.

cuDNN runs float32 convolutions in TF32 unless ``torch.backends.cudnn.allow_tf32`` is false
(PyTorch's default is true), which moves matches by about 0.1 px (docs/design.md §13.11). That
flag is process-global and not thread-local, so toggling it around a call races with every other
thread. A backend that holds float32 modules on CUDA therefore turns it off **once**, when it is
built (:func:`require_exact_float32_convolutions`), and only reads it afterwards
(:func:`check_exact_float32_convolutions`): no call ever writes process state.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = [
    "Precision",
    "check_exact_float32_convolutions",
    "require_exact_float32_convolutions",
    "resolve_precision",
]

_LOG = logging.getLogger(__name__)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Precision:
    """The dtypes of the SD parts of a PyTorch backend.

    Attributes:
        unet: the truncated UNet's and the CLIP text encoder's weights and activations.
        vae: the VAE encoder's weights and activations (the posterior sample is formed in float32).
    """

    unet: torch.dtype = torch.float32
    vae: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for part, dtype in (("dtype", self.unet), ("vae_dtype", self.vae)):
            if dtype not in _DTYPES:
                raise ConfigError(f"{part}={dtype} is not supported; use torch.float32, torch.float16 or torch.bfloat16")

    def has_float32(self) -> bool:
        """Whether any part runs float32 convolutions (and so cares about TF32)."""
        return torch.float32 in (self.unet, self.vae)


def resolve_precision(device: torch.device, dtype: torch.dtype | None = None, vae_dtype: torch.dtype | None = None) -> Precision:
    """The default precision of ``device``, with ``dtype``/``vae_dtype`` replacing its parts.

    CUDA: float16 UNet, text encoder and VAE encoder (the official autocast); else float32.
    """
    default = torch.float16 if device.type == "cuda" else torch.float32
    return Precision(unet=dtype or default, vae=vae_dtype or default)


def require_exact_float32_convolutions(device: torch.device, precision: Precision) -> None:
    """Turn cuDNN TF32 off for the process, once, if float32 modules run on a CUDA ``device``.

    Called when a backend is built, never per call (docs/design.md §13.20). A no-op on the CPU
    and for float16/bfloat16-only precisions.
    """
    if device.type != "cuda" or not precision.has_float32():
        return
    if torch.backends.cudnn.allow_tf32:
        _LOG.info("float32 modules on CUDA: turning cuDNN TF32 off for this process (docs/design.md §13.20)")
        torch.backends.cudnn.allow_tf32 = False


def check_exact_float32_convolutions(device: torch.device, precision: Precision) -> None:
    """Warn if someone turned cuDNN TF32 back on while float32 modules run on CUDA (only reads the flag;
    Python's warning filter shows it once)."""
    if device.type == "cuda" and precision.has_float32() and torch.backends.cudnn.allow_tf32:
        warnings.warn(
            "torch.backends.cudnn.allow_tf32 is True again: float32 convolutions now run in TF32 and matches "
            "move by ~0.1 px; set it back to False for exact float32 features (docs/design.md §13.20)",
            stacklevel=3,
        )
