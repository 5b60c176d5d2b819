"""Feature backends: what turns images + noise + prompt into raw SD feature maps.

The :class:`~sd4match_sdk.matcher.Matcher` does everything else (image loading, point checks,
noise drawing, coordinate maps, matching), so every backend is held to the same contract:
given the same noise it must return the same raw features as the PyTorch reference.
"""

from .base import FeatureBackend
from .torch_backend import TorchFeatureBackend

__all__ = ["FeatureBackend", "TorchFeatureBackend"]
