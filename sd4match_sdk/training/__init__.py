"""Prompt tuning (Single, Class, CPM) on SPair-71k and PF-Pascal (docs/design.md §8).

>>> from sd4match_sdk.training import Trainer, load_train_config  # doctest: +SKIP
>>> cfg = load_train_config("training/configs/single_spair.toml", root="data/SPair-71k")  # doctest: +SKIP
"""

from ..prompts.trainable import ClassPrompt, CPMPrompt, SinglePrompt, TrainablePrompt, build_trainable_prompt
from .config import TrainConfig, load_train_config
from .trainer import Trainer, TrainResult

__all__ = [
    "TrainConfig",
    "load_train_config",
    "Trainer",
    "TrainResult",
    "TrainablePrompt",
    "SinglePrompt",
    "ClassPrompt",
    "CPMPrompt",
    "build_trainable_prompt",
]
