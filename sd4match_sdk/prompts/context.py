"""Prompts as UNet cross-attention contexts, through the frozen CLIP text encoder (docs/design.md §4.1, §4.4).

Fixed contexts (text, single, class) are computed once per category and cached; the CPM context
is built per pair from the DINOv2 tokens of both images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, PromptError, UnknownCategoryError
from ..models.cpm import ConditionalPromptModule, assemble_prompt
from ..models.text import encode_token_embeddings, special_token_embeddings, text_width, token_embeddings_for_text
from .types import PromptKind, PromptWeights

__all__ = ["PromptContexts"]


class PromptContexts:
    """Turns a prompt into UNet cross-attention contexts with a frozen CLIP text encoder.

    Fixed contexts (text, single, class) are computed once and cached; the CPM context is built
    per pair from DINOv2 tokens.

    Args:
        weights: the prompt.
        tokenizer: the SD tokenizer.
        text_encoder: the SD ``CLIPTextModel`` (its device and dtype are used).
    """

    def __init__(self, weights: PromptWeights, tokenizer: Any, text_encoder: Any) -> None:
        self.weights = weights
        self.kind = weights.kind
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.width = text_width(text_encoder)
        self.length = int(text_encoder.config.max_position_embeddings)
        self._cache: dict[str | None, Tensor] = {}
        self.cpm: ConditionalPromptModule | None = None
        device = next(text_encoder.parameters()).device
        for name, embeds in weights.token_embeds.items():
            if embeds.shape != (1, self.length, self.width):
                raise PromptError(
                    f"prompt entry {name!r} has shape {tuple(embeds.shape)}, but this text encoder takes "
                    f"(1, {self.length}, {self.width}); the prompt belongs to another model"
                )
        if weights.kind is PromptKind.CPM:
            self.cpm = ConditionalPromptModule.from_state_dict(weights.cpm_state or {}).to(device).eval()
            cfg = self.cpm.config
            if cfg.text_dim != self.width or cfg.global_length + cfg.cond_length != self.length - 2:
                raise PromptError(
                    f"CPM ({cfg.name}, width {cfg.text_dim}) does not fit this text encoder (width "
                    f"{self.width}, {self.length - 2} learnable tokens)"
                )

    @property
    def categories(self) -> list[str]:
        return self.weights.categories

    @property
    def needs_category(self) -> bool:
        return self.kind is PromptKind.CLASS or (self.kind is PromptKind.TEXT and "{category}" in (self.weights.text or ""))

    def _check_category(self, category: str | None) -> None:
        if self.kind is PromptKind.CLASS and category not in self.weights.token_embeds:
            raise UnknownCategoryError(category, self.categories)
        if self.needs_category and category is None:
            raise ConfigError(f"the text prompt {self.weights.text!r} needs category=...")

    def fixed(self, category: str | None = None) -> Tensor:
        """``(1, 77, D)`` context of a text, single or class prompt (class: of ``category``)."""
        if self.kind is PromptKind.CPM:
            raise ConfigError("a CPM prompt depends on both images; use pair contexts (match) instead")
        self._check_category(category)
        key = category if self.needs_category else None
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = self._encode_fixed(key)
        return self._cache[key]

    def _encode_fixed(self, category: str | None) -> Tensor:
        device = next(self.text_encoder.parameters()).device
        if self.kind is PromptKind.TEXT:
            text = (self.weights.text or "").replace("{category}", category or "")
            embeds = token_embeddings_for_text(self.tokenizer, self.text_encoder, [text])
        elif self.kind is PromptKind.SINGLE:
            (embeds,) = self.weights.token_embeds.values()
        else:
            embeds = self.weights.token_embeds[category]  # type: ignore[index]
        return encode_token_embeddings(self.text_encoder, embeds.to(device))

    def special_tokens(self) -> tuple[Tensor, Tensor]:
        """SOS+pos0 and EOS+pos76 embeddings, ``(1, 1, D)`` each."""
        return special_token_embeddings(self.tokenizer, self.text_encoder, self.length)

    def pair(self, dino_source: Tensor, dino_target: Tensor) -> Tensor:
        """``(B, 77, D)`` CPM contexts of B pairs from their DINOv2 patch tokens."""
        if self.cpm is None:
            raise ConfigError("pair contexts exist only for CPM prompts")
        sos, eos = self.special_tokens()
        device = sos.device
        learned = self.cpm(dino_source.to(device), dino_target.to(device))
        return encode_token_embeddings(self.text_encoder, assemble_prompt(learned, sos, eos))
