"""Fixtures of the evaluation tests (the tiny models and dataset trees come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cpm_prompt_file(tiny_sd: Path, tiny_dino: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised CPM prompt for the tiny models, in the SDK's prompt format."""
    from sd4match_sdk.models.cpm import CPMConfig
    from sd4match_sdk.models.loading import load_dino, load_sd_components
    from sd4match_sdk.prompts import save_prompt
    from sd4match_sdk.prompts.trainable import build_trainable_prompt

    parts = load_sd_components(str(tiny_sd))
    config = CPMConfig(dino_dim=int(load_dino(str(tiny_dino))[0].config.hidden_size),
                       text_dim=int(parts.text_encoder.config.hidden_size))  # fmt: skip
    prompt = build_trainable_prompt("cpm", parts.tokenizer, parts.text_encoder, seed=1, cpm_config=config)
    return save_prompt(tmp_path_factory.mktemp("prompts") / "cpm.safetensors", prompt.to_weights())
