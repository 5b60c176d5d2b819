"""sd4match-sdk: semantic keypoint matching with Stable Diffusion features and learned prompts.

Quick start::

    from sd4match_sdk import Matcher
    m = Matcher.from_pretrained("path/to/stable-diffusion-2-1", prompt="official:single_spair")
    result = m.match("cat_a.jpg", "cat_b.jpg", [[120.0, 80.0]], seed=0)
    result.points, result.scores

The public names are imported on first use, so the console scripts parse their arguments (and
answer ``--help``) without importing torch.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from ._version import __version__

if TYPE_CHECKING:
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

_ERRORS = ("SD4MatchError", "ConfigError", "ImageError", "PointsError", "PromptError", "UnknownCategoryError",
           "ModelNotFoundError", "WeightsError")  # fmt: skip
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        **{name: ".matcher" for name in ("Matcher", "MatchResult", "ImageFeatures")},
        **{name: ".config" for name in ("FeatureConfig", "MatchConfig", "MatchMethod")},
        **{name: ".prompts" for name in ("PromptKind", "PromptWeights", "load_prompt", "save_prompt")},
        **{name: ".errors" for name in _ERRORS},
    },
)

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
