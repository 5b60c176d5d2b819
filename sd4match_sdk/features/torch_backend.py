"""The PyTorch reference backend: the oracle every faster path is tested against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import FeatureConfig
from ..errors import ConfigError
from ..models.dino import dino_patch_tokens, dino_pixels
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..noise import ImageNoise
from ..prompts import PromptContexts, PromptKind, PromptWeights
from .batch import ImageBatch, per_image

__all__ = ["TorchFeatureBackend", "batch_features"]


@contextmanager
def _float32_convolutions(device: torch.device) -> Iterator[None]:
    """Run float32 convolutions in full float32 on CUDA (cuDNN defaults to TF32 for them).

    TF32 rounds inputs to 10 mantissa bits: on CUDA it moved matches by ~0.1 px against the CPU
    reference and made batched and single calls differ. float16 layers are unaffected. The
    previous setting is restored afterwards.
    """
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def batch_features(extractor: SDFeatureExtractor, batch: ImageBatch, contexts: Tensor) -> Tensor:
    """Raw features of a batch: VAE posterior sample (never differentiated), then the truncated
    UNet on the noised latents with one context per image (gradients reach ``contexts`` when
    autograd is on, as in prompt tuning).

    Args:
        extractor: the SD feature extractor.
        batch: B images and their noise, on the extractor's device.
        contexts: ``(B, 77, D)`` cross-attention contexts.

    Returns:
        ``(B, C, S/16, S/16)`` raw ensemble-mean features (float32).
    """
    with torch.no_grad():
        latents = extractor.encode_latents(batch.pixels, batch.eps_vae)
    return extractor.unet_features(latents, batch.noise, contexts)


class TorchFeatureBackend:
    """SD 2.1 in PyTorch: VAE encoder, truncated UNet, CLIP text encoder (and DINOv2 + CPM).

    Args:
        components: loaded SD parts.
        prompt: the prompt.
        feature_config: image size, timestep, ensemble.
        device: where the models run.
        dino: ``(Dinov2Model, processor)``, required for CPM prompts.
    """

    name = "torch"

    def __init__(
        self,
        components: SDComponents,
        prompt: PromptWeights,
        feature_config: FeatureConfig,
        device: torch.device,
        dino: tuple[Any, Any] | None = None,
    ) -> None:
        self.device = device
        self.components = components
        self.feature_config = feature_config
        self.extractor = SDFeatureExtractor(
            components.vae, components.unet, components.scheduler, feature_config.timestep
        ).to(device)
        components.text_encoder.to(device)
        self.prompt = PromptContexts(prompt, components.tokenizer, components.text_encoder)
        if self.prompt.kind is PromptKind.CPM and dino is None:
            raise ConfigError("a CPM prompt needs DINOv2: pass dino=<dir or hub id> (default facebook/dinov2-base)")
        self.dino = dino[0].to(device) if dino else None
        self.dino_processor = dino[1] if dino else None

    @property
    def prompt_kind(self) -> PromptKind:
        return self.prompt.kind

    @property
    def categories(self) -> list[str]:
        return self.prompt.categories

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.extractor.latent_shape(self.feature_config.image_size)

    def check_category(self, category: str | None) -> None:
        if self.prompt.kind is not PromptKind.CPM:
            self.prompt.fixed(category)  # validates (and caches) the context

    @torch.inference_mode()
    def _run(self, batch: ImageBatch, contexts: Tensor) -> Tensor:
        with _float32_convolutions(self.device):
            return batch_features(self.extractor, batch.to(self.device), contexts.to(self.device))

    @torch.inference_mode()
    def dino_tokens(self, images: list[np.ndarray]) -> Tensor:
        """``(B, 256, D)`` DINOv2 patch tokens of ``images``, the CPM's input (float32, on the device)."""
        if self.dino is None:
            raise ConfigError("DINOv2 tokens are the input of a CPM prompt; this backend holds another kind of prompt")
        return dino_patch_tokens(self.dino, dino_pixels(self.dino_processor, images))

    @torch.inference_mode()
    def pair_contexts(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        tokens: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``(P, 77, D)`` one context per pair (shared by both images); a CPM uses ``tokens``
        (sources', targets' :meth:`dino_tokens`) when given, else runs DINOv2 on the pairs."""
        if self.prompt.kind is PromptKind.CPM:
            if tokens is None:
                both = self.dino_tokens(sources + targets)
                tokens = both[: len(sources)], both[len(sources) :]
            return self.prompt.pair(tokens[0].to(self.device), tokens[1].to(self.device))
        return torch.cat([self.prompt.fixed(c) for c in categories])

    def extract_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
        tokens: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        contexts = per_image(self.pair_contexts(sources, targets, categories, tokens))
        batch = ImageBatch.from_pairs(sources, targets, noises, self.feature_config.image_size, categories)
        return self._run(batch, contexts)

    def extract_images(self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]) -> Tensor:
        if self.prompt.kind is PromptKind.CPM:
            raise ConfigError("CPM features depend on both images of a pair; use match() or match_batch()")
        contexts = torch.cat([self.prompt.fixed(c) for c in categories])
        return self._run(ImageBatch.from_images(images, noises, self.feature_config.image_size, categories), contexts)
