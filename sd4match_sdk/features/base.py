"""The contract every feature backend (PyTorch, ONNX Runtime, TensorRT) fulfils."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ..config import FeatureConfig
from ..noise import ImageNoise
from ..prompts import PromptKind
from .batch import PreparedBatch

__all__ = ["FeatureBackend"]


class FeatureBackend(Protocol):
    """Images + noise + prompt -> raw ``up_blocks[1]`` feature maps.

    The :class:`~sd4match_sdk.matcher.Matcher` does everything else (image loading, point checks,
    noise drawing, coordinate maps, matching), so every backend is held to the same contract:
    given the same noise it returns the same raw features as the PyTorch reference.

    A request runs in two halves so that the Matcher can overlap them across batches
    (docs/design.md §13.22): ``prepare_*`` is host work (resize, DINOv2 pixels, pinned memory) and
    may run on a worker thread; ``extract_prepared`` is the device work.

    Attributes:
        name: short backend name (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``).
        device: where the features are computed.
        feature_config: image size, timestep and ensemble the backend runs with.
        prompt_kind: the kind of prompt it holds (text, single, class, cpm).
        categories: category names of a class prompt (else empty).
        latent_shape: ``(4, S/8, S/8)``, the shape of one image's noise draws.

    Optional, for CPM prompts on backends that run DINOv2 apart from the UNet (the PyTorch
    backend; an engine runs it inside its prompt network): ``dino_tokens(images) -> (B, 256, D)``
    and ``extract_pairs(..., tokens=(source_tokens, target_tokens))``, so that a caller can compute
    each image's tokens once and reuse them in all its pairs (the evaluation runner does,
    docs/design.md §9.5).
    """

    name: str
    device: torch.device
    feature_config: FeatureConfig
    prompt_kind: PromptKind
    categories: list[str]
    latent_shape: tuple[int, int, int]

    def check_category(self, category: str | None) -> None:
        """Raise ``UnknownCategoryError``/``ConfigError`` if ``category`` is unusable."""
        ...

    def max_batch_images(self) -> int:
        """Images one device batch may hold (the memory budget); the Matcher splits larger requests."""
        ...

    def prepare_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
    ) -> PreparedBatch:
        """Host work of P pairs (``(H, W, 3)`` uint8 RGB images), for :meth:`extract_prepared`."""
        ...

    def prepare_images(self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]) -> PreparedBatch:
        """Host work of single images (not for CPM prompts), for :meth:`extract_prepared`."""
        ...

    def extract_prepared(self, prepared: PreparedBatch) -> Tensor:
        """Raw features ``(B, C, h, w)`` float32 of a prepared batch, in its image order."""
        ...

    def extract_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
    ) -> Tensor:
        """Raw features of P pairs, ``(2P, C, h, w)`` float32 ordered ``[src0, trg0, src1, ...]``.

        Args:
            sources, targets: ``(H, W, 3)`` uint8 RGB images.
            categories: per-pair category (class prompts) or ``None``.
            noises: per-pair ``(source noise, target noise)``.
        """
        ...

    def extract_images(self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]) -> Tensor:
        """Raw features of single images, ``(B, C, h, w)``; not available for CPM prompts."""
        ...
