"""Model selection during training: the current prompt's NN-PCK on the val split (docs/design.md §8.5).

The official rule: after every epoch, score the val split with nearest-neighbour matching at the
training timestep (t = 261) and one noise draw per image, and keep the best prompt.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import FeatureConfig, MatchConfig, MatchMethod
from ..features import TorchFeatureBackend
from ..matcher import Matcher
from ..models.loading import SDComponents
from ..prompts import PromptWeights
from .config import TrainConfig

__all__ = ["validation_matcher"]


def validation_matcher(
    components: SDComponents,
    prompt: PromptWeights,
    config: TrainConfig,
    device: torch.device,
    dino: tuple[Any, Any] | None = None,
) -> Matcher:
    """A Matcher with ``prompt``, the training timestep and ensemble, and nearest-neighbour matching
    on the torch reference."""
    feature_config = FeatureConfig(config.image_size, config.timestep, config.ensemble)
    backend = TorchFeatureBackend(components, prompt, feature_config, device, dino)
    return Matcher(backend, MatchConfig(method=MatchMethod.NN), matching_backend="torch")
