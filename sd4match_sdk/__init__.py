"""sd4match-sdk: semantic keypoint matching with Stable Diffusion features and learned prompts.

Quick start::

    from sd4match_sdk import Matcher
    m = Matcher.from_pretrained("path/to/stable-diffusion-2-1", prompt="single_spair.safetensors")
    result = m.match("cat_a.jpg", "cat_b.jpg", [[120.0, 80.0]], seed=0)
    result.points, result.scores
"""

from ._version import __version__
from .config import FeatureConfig, MatchConfig, MatchMethod
from .errors import (
    ConfigError,
    ImageError,
    ModelNotFoundError,
    PointsError,
    PromptError,
    SD4MatchError,
    UnknownCategoryError,
    WeightsError,
)
from .matcher import ImageFeatures, Matcher, MatchResult
from .prompts import PromptKind, PromptWeights, load_prompt, save_prompt

__all__ = [
    "__version__",
    "Matcher",
    "MatchResult",
    "ImageFeatures",
    "FeatureConfig",
    "MatchConfig",
    "MatchMethod",
    "PromptKind",
    "PromptWeights",
    "load_prompt",
    "save_prompt",
    "SD4MatchError",
    "ConfigError",
    "ImageError",
    "PointsError",
    "PromptError",
    "UnknownCategoryError",
    "ModelNotFoundError",
    "WeightsError",
]
