"""Fixtures of the prompt tests: token embeddings of a text and the library's own CLIP forward pass."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _ids(tokenizer, text: str) -> torch.Tensor:
    return tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


@pytest.fixture(scope="session")
def token_embeds(sd_components) -> Callable[[str], torch.Tensor]:
    """``text -> (1, 77, D)`` token + position embeddings of the tiny SD text encoder."""

    def embed(text: str) -> torch.Tensor:
        with torch.no_grad():
            return sd_components.text_encoder.embeddings(input_ids=_ids(sd_components.tokenizer, text))

    return embed


@pytest.fixture(scope="session")
def clip_forward(sd_components) -> Callable[[str], torch.Tensor]:
    """``text -> (1, 77, D)`` context from the library's own CLIPTextModel forward: the independent reference."""

    def forward(text: str) -> torch.Tensor:
        with torch.no_grad():
            return sd_components.text_encoder(input_ids=_ids(sd_components.tokenizer, text)).last_hidden_state

    return forward
