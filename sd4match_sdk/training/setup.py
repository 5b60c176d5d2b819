"""What a training run is built from: the frozen SD parts on the device, the DINOv2 tokens and the initial prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..config import DEFAULT_DINO_MODEL
from ..data.base import PairDataset
from ..distributed import Distributed
from ..models.cpm import CPMConfig
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..noise import derive_seed
from ..prompts import PromptKind
from ..prompts.trainable import TrainablePrompt, build_trainable_prompt
from .config import TrainConfig
from .dino_cache import DinoTokenCache, dino_cache_key

__all__ = ["filled_dino_cache", "frozen_extractor", "initial_prompt"]


def frozen_extractor(components: SDComponents, config: TrainConfig, device: torch.device) -> SDFeatureExtractor:
    """The SD feature extractor at the training timestep, with every SD part frozen on ``device``."""
    for module in (components.unet, components.vae, components.text_encoder):
        module.requires_grad_(False).eval().to(device)
    if config.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
    return SDFeatureExtractor(components.vae, components.unet, components.scheduler, config.timestep)


def filled_dino_cache(
    dino: tuple[Any, Any], config: TrainConfig, train_set: PairDataset, distributed: Distributed, device: torch.device,
    progress: bool,
) -> DinoTokenCache:  # fmt: skip
    """The DINOv2 tokens of every (image, flip) of the training split, computed once across the
    processes before the first step (:meth:`DinoTokenCache.fill`)."""
    model, processor = dino
    model.to(device).eval().requires_grad_(False)
    cache = DinoTokenCache(model, processor, config.dino or DEFAULT_DINO_MODEL, config.dino_cache or None)
    images = [(dino_cache_key(path, r.flip), path, r.flip) for r in train_set.records for path in (r.source_path, r.target_path)]
    cache.fill(images, distributed, device, progress=progress)
    return cache


def initial_prompt(
    config: TrainConfig, components: SDComponents, categories: Sequence[str], dino: tuple[Any, Any] | None
) -> TrainablePrompt:
    """The freshly initialised prompt of ``config.prompt``, seeded by ``(seed, "prompt-init")``."""
    cpm_config = None
    if config.prompt is PromptKind.CPM:
        cpm_config = CPMConfig(
            dino_dim=int(dino[0].config.hidden_size),  # type: ignore[index]
            text_dim=int(components.text_encoder.config.hidden_size),
            global_length=config.cpm_global,
            cond_length=config.cpm_cond,
        )
    return build_trainable_prompt(
        config.prompt,
        components.tokenizer,
        components.text_encoder,
        seed=derive_seed(config.seed, "prompt-init"),
        categories=categories,
        cpm_config=cpm_config,
    )
