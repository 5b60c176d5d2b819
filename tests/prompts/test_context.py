"""Prompt contexts through the frozen CLIP text encoder: the token route equals CLIP's own forward pass (docs/design.md §4.1)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk import PromptError
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule
from sd4match_sdk.models.text import encode_token_embeddings
from sd4match_sdk.prompts import PromptContexts, PromptKind, PromptWeights, load_prompt








def test_token_route_equals_clip_forward(sd_components, token_embeds, clip_forward) -> None:
    """Learned token embeddings go through the encoder with a causal mask and the final LN."""
    with torch.no_grad():
        got = encode_token_embeddings(sd_components.text_encoder, token_embeds("a photo of a cat"))
    torch.testing.assert_close(got, clip_forward("a photo of a cat"), atol=1e-5, rtol=1e-5)


def test_empty_and_text_prompts(sd_components, clip_forward) -> None:
    empty = PromptContexts(load_prompt(None), sd_components.tokenizer, sd_components.text_encoder)
    assert empty.kind is PromptKind.TEXT
    torch.testing.assert_close(empty.fixed(), clip_forward(""), atol=1e-5, rtol=1e-5)
    template = PromptContexts(load_prompt("a photo of a {category}"), sd_components.tokenizer, sd_components.text_encoder)
    torch.testing.assert_close(template.fixed("dog"), clip_forward("a photo of a dog"), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="category"):
        template.fixed(None)


def test_width_mismatch(sd_components) -> None:
    wrong = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.randn(1, 77, 1024)})
    with pytest.raises(PromptError, match="another model"):
        PromptContexts(wrong, sd_components.tokenizer, sd_components.text_encoder)
    cpm = PromptWeights(PromptKind.CPM, cpm_state=ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=1024)).state_dict())
    with pytest.raises(PromptError, match="does not fit"):
        PromptContexts(cpm, sd_components.tokenizer, sd_components.text_encoder)
