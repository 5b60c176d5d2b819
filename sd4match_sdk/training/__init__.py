"""Prompt tuning (Single, Class, CPM) on SPair-71k and PF-Pascal (docs/design.md §8).

>>> from sd4match_sdk.training import Trainer, load_train_config  # doctest: +SKIP
>>> cfg = load_train_config("training/configs/single_spair.toml", root="data/SPair-71k")  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ..prompts.trainable import ClassPrompt, CPMPrompt, SinglePrompt, TrainablePrompt, build_trainable_prompt
    from .config import TrainConfig, load_train_config
    from .trainer import Trainer, TrainResult

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "ClassPrompt": "..prompts.trainable",
        "CPMPrompt": "..prompts.trainable",
        "SinglePrompt": "..prompts.trainable",
        "TrainablePrompt": "..prompts.trainable",
        "build_trainable_prompt": "..prompts.trainable",
        "TrainConfig": ".config",
        "load_train_config": ".config",
        "Trainer": ".trainer",
        "TrainResult": ".trainer",
    },
)

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
