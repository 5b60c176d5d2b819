"""Prompts through the frozen CLIP text encoder (docs/design.md §4.1).

A learned prompt is a sequence of *token-level* embeddings (token + position embedding already
added), shape ``(B, 77, D)``. It goes through the encoder layers with a causal mask and the final
layer norm, exactly as the official ``_encode_prompt(token_embeds=...)``; no padding mask and no
classifier-free guidance. Text prompts take the same route after the embedding layer.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import PromptError

__all__ = [
    "text_transformer",
    "text_width",
    "causal_mask",
    "encode_token_embeddings",
    "token_embeddings_for_text",
    "special_token_embeddings",
]


def text_transformer(text_encoder: nn.Module) -> nn.Module:
    """The module holding ``embeddings``, ``encoder`` and ``final_layer_norm``.

    transformers 4 nests them under ``text_model``; transformers 5 flattened ``CLIPTextModel``.
    """
    return getattr(text_encoder, "text_model", text_encoder)


def text_width(text_encoder: nn.Module) -> int:
    """Hidden size D of the text encoder (1024 for SD 2.1)."""
    return int(text_encoder.config.hidden_size)


def causal_mask(length: int, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """Additive ``(1, 1, L, L)`` mask: 0 on and below the diagonal, dtype-min above."""
    mask = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.triu(mask, diagonal=1)[None, None]


def _run_encoder(encoder: nn.Module, hidden: Tensor, mask: Tensor) -> Tensor:
    params = inspect.signature(encoder.forward).parameters
    if "causal_attention_mask" in params:  # transformers 4
        out: Any = encoder(inputs_embeds=hidden, attention_mask=None, causal_attention_mask=mask)
    else:  # transformers 5: one additive mask; an explicit mask turns SDPA's is_causal off
        out = encoder(inputs_embeds=hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def encode_token_embeddings(text_encoder: nn.Module, token_embeds: Tensor) -> Tensor:
    """Run token-level embeddings through the CLIP encoder and final layer norm.

    Args:
        text_encoder: a ``transformers.CLIPTextModel``.
        token_embeds: ``(B, L, D)`` embeddings with position embeddings already added.

    Returns:
        ``(B, L, D)`` UNet cross-attention context.

    Raises:
        PromptError: ``D`` differs from the encoder's width.
    """
    width = text_width(text_encoder)
    if token_embeds.ndim != 3 or token_embeds.shape[-1] != width:
        raise PromptError(
            f"prompt embeddings have shape {tuple(token_embeds.shape)} but the text encoder "
            f"expects (B, L, {width}); the prompt was trained for another text encoder"
        )
    tm = text_transformer(text_encoder)
    dtype = tm.final_layer_norm.weight.dtype
    hidden = token_embeds.to(dtype)
    mask = causal_mask(hidden.shape[1], dtype, hidden.device)
    return tm.final_layer_norm(_run_encoder(tm.encoder, hidden, mask))


def token_embeddings_for_text(tokenizer: Any, text_encoder: nn.Module, texts: list[str]) -> Tensor:
    """Token + position embeddings of texts padded to the tokenizer's 77 tokens: ``(B, 77, D)``."""
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    tm = text_transformer(text_encoder)
    device = tm.final_layer_norm.weight.device
    return tm.embeddings(input_ids=ids.to(device))


def special_token_embeddings(tokenizer: Any, text_encoder: nn.Module, length: int = 77) -> tuple[Tensor, Tensor]:
    """SOS + position 0 and EOS + position ``length-1`` embeddings, each ``(1, 1, D)``.

    These frame every learned prompt: ``[SOS | 75 learned | EOS]`` (docs/design.md §4.2).
    """
    tm = text_transformer(text_encoder)
    emb = tm.embeddings
    device = emb.token_embedding.weight.device
    ids = torch.tensor([tokenizer.bos_token_id, tokenizer.eos_token_id], device=device)
    tokens = emb.token_embedding(ids)
    positions = emb.position_embedding(torch.tensor([0, length - 1], device=device))
    both = tokens + positions
    return both[None, 0:1], both[None, 1:2]
