"""The PyTorch backend: the eager reference (the oracle every faster path is tested against) and,
with ``compile=``, the compiled path (docs/design.md §13.21)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import FeatureConfig
from ..errors import ConfigError
from ..models.attention import ContextKV
from ..models.dino import dino_patch_tokens, dino_pixels
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..noise import ImageNoise
from ..prompts import PromptContexts, PromptKind, PromptWeights
from .batch import ImageBatch, PreparedBatch, per_image
from .budget import BatchBudget
from .compiled import CompiledStages, CompileMode, resolve_compile_mode
from .precision import Precision, check_exact_float32_convolutions, require_exact_float32_convolutions

__all__ = ["TorchFeatureBackend", "batch_features"]


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


def _apply_precision(components: SDComponents, precision: Precision | None) -> Precision:
    """Cast the parts to ``precision`` (when given), else read the precision they have."""
    if precision is None:
        return Precision(unet=components.unet.dtype, vae=components.vae.dtype)
    for module, dtype in ((components.unet, precision.unet), (components.text_encoder, precision.unet), (components.vae, precision.vae)):
        if module.dtype != dtype:  # diffusers logs a note on every cast, even to the same dtype
            module.to(dtype)
    return precision


class TorchFeatureBackend:
    """SD 2.1 in PyTorch: VAE encoder, truncated UNet, CLIP text encoder (and DINOv2 + CPM).

    Args:
        components: loaded SD parts (moved to ``device``; cast when ``precision`` is given).
        prompt: the prompt.
        feature_config: image size, timestep, ensemble.
        device: where the models run.
        dino: ``(Dinov2Model, processor)``, required for CPM prompts.
        precision: the dtypes of the parts; ``None`` keeps the components' own.
        compile: ``False``/``"off"`` (eager), ``True``/``"default"`` or ``"max-autotune"``
            (docs/design.md §13.21); changes the components in place.
        memory_budget: bytes one device batch may use (docs/design.md §13.22); ``None``: half of
            the free memory.
    """

    name = "torch"

    def __init__(
        self,
        components: SDComponents,
        prompt: PromptWeights,
        feature_config: FeatureConfig,
        device: torch.device,
        dino: tuple[Any, Any] | None = None,
        precision: Precision | None = None,
        compile: bool | str | CompileMode = CompileMode.OFF,
        memory_budget: int | None = None,
    ) -> None:
        # 1. precision (float32 on CUDA: cuDNN TF32 off once, never per call)
        self.device = device
        self.components = components
        self.feature_config = feature_config
        self.precision = _apply_precision(components, precision)
        require_exact_float32_convolutions(device, self.precision)
        # 2. models and the prompt
        self.extractor = SDFeatureExtractor(
            components.vae, components.unet, components.scheduler, feature_config.timestep
        ).to(device)
        components.text_encoder.to(device)
        self.prompt = PromptContexts(prompt, components.tokenizer, components.text_encoder)
        if self.prompt.kind is PromptKind.CPM and dino is None:
            raise ConfigError("a CPM prompt needs DINOv2: pass dino=<dir or hub id> (default facebook/dinov2-base)")
        self.dino = dino[0].to(device) if dino else None
        self.dino_processor = dino[1] if dino else None
        # 3. the compiled path and the batch budget
        self.compile_mode = resolve_compile_mode(compile)
        self.compiled = CompiledStages(self.extractor, self.compile_mode, device) if self.compile_mode is not CompileMode.OFF else None
        self._context_kv: dict[str | None, ContextKV] = {}
        self.budget = BatchBudget(
            feature_config,
            int(components.vae.config.block_out_channels[0]),
            int(components.unet.config.block_out_channels[0]),
            self.precision.vae,
            self.precision.unet,
            device,
            memory_budget,
        )

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

    def max_batch_images(self) -> int:
        """Images one device batch may hold under the memory budget."""
        return self.budget.images()

    # ------------------------------------------------------------------ host side

    def _prepared(self, prepared: PreparedBatch) -> PreparedBatch:
        return prepared.pin_memory() if self.device.type == "cuda" else prepared

    def prepare_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
        tokens: tuple[Tensor, Tensor] | None = None,
    ) -> PreparedBatch:
        """Host work of P pairs: the 2P-image batch (and, for a CPM without ``tokens``, the DINOv2
        pixels), pinned on CUDA."""
        batch = ImageBatch.from_pairs(sources, targets, noises, self.feature_config.image_size, categories)
        needs_pixels = self.prompt.kind is PromptKind.CPM and tokens is None
        dino = dino_pixels(self.dino_processor, sources + targets) if needs_pixels else None
        return self._prepared(PreparedBatch(batch, True, dino, tokens if self.prompt.kind is PromptKind.CPM else None))

    def prepare_images(self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]) -> PreparedBatch:
        """Host work of single images (not for CPM prompts)."""
        if self.prompt.kind is PromptKind.CPM:
            raise ConfigError("CPM features depend on both images of a pair; use match() or match_batch()")
        return self._prepared(PreparedBatch(ImageBatch.from_images(images, noises, self.feature_config.image_size, categories), False))

    # ------------------------------------------------------------------ device side

    def _pair_contexts(self, prepared: PreparedBatch) -> Tensor:
        """``(P, 77, D)`` CPM contexts of the prepared pairs (shared by both images of a pair)."""
        if prepared.dino_tokens is not None:
            sources, targets = (t.to(self.device, non_blocking=True) for t in prepared.dino_tokens)
            return self.prompt.pair(sources, targets)
        tokens = dino_patch_tokens(self.dino, prepared.dino_pixels.to(self.device, non_blocking=True))  # type: ignore[union-attr]
        p = tokens.shape[0] // 2
        return self.prompt.pair(tokens[:p], tokens[p:])

    def _fixed_key(self, category: str | None) -> str | None:
        return category if self.prompt.needs_category else None

    def _fixed_kv(self, categories: tuple[str | None, ...]) -> ContextKV:
        """Per-image cross-attention keys/values of a fixed prompt, each context projected once ever."""
        assert self.compiled is not None
        keys = [self._fixed_key(c) for c in categories]
        for key in set(keys) - self._context_kv.keys():
            self._context_kv[key] = self.compiled.context_kv(self.prompt.fixed(key))
        layers = self._context_kv[keys[0]].keys()
        return {
            name: tuple(torch.cat([self._context_kv[k][name][i] for k in keys]) for i in range(2))  # type: ignore[misc]
            for name in layers
        }

    def extract_prepared(self, prepared: PreparedBatch) -> Tensor:
        """Raw features ``(B, C, h, w)`` of a prepared batch (pairs interleaved as prepared)."""
        check_exact_float32_convolutions(self.device, self.precision)
        if self.compiled is not None:
            return self._run_compiled(prepared)
        return self._run_eager(prepared)

    @torch.inference_mode()
    def _run_eager(self, prepared: PreparedBatch) -> Tensor:
        if self.prompt.kind is PromptKind.CPM:
            contexts = per_image(self._pair_contexts(prepared))
        else:
            contexts = torch.cat([self.prompt.fixed(c) for c in prepared.images.categories])
        batch = prepared.images.to(self.device, non_blocking=True)
        return batch_features(self.extractor, batch, contexts.to(self.device))

    @torch.no_grad()
    def _run_compiled(self, prepared: PreparedBatch) -> Tensor:
        batch = prepared.images.to(self.device, non_blocking=True)
        assert self.compiled is not None
        if self.prompt.kind is PromptKind.CPM:  # projected once per image, outside the compiled graph
            kv = self.compiled.context_kv(per_image(self._pair_contexts(prepared)))
        else:
            kv = self._fixed_kv(batch.categories)
        return self.compiled.features(batch.pixels, batch.eps_vae, batch.noise, kv)

    # ------------------------------------------------------------------ FeatureBackend

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
        return self.extract_prepared(self.prepare_pairs(sources, targets, categories, noises, tokens))

    def extract_images(self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]) -> Tensor:
        return self.extract_prepared(self.prepare_images(images, categories, noises))
