"""The CPM's DINOv2 token cache: keyed by image and flip, filled once, persisted, tied to its model (docs/design.md §4.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.models.dino import dino_patch_tokens, dino_pixels
from sd4match_sdk.models.loading import load_dino
from sd4match_sdk.training.dino_cache import DinoTokenCache, dino_cache_key


def test_cache_keys_flip_and_persists(tiny_dino, tmp_path):
    dino, processor = load_dino(str(tiny_dino))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 180, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    path = tmp_path / "a" / "cat.png"
    path.parent.mkdir()
    Image.fromarray(image).save(path)
    keys = [dino_cache_key("a/cat.png", False), dino_cache_key("a/cat.png", True)]
    assert keys == ["a/cat.png|flip=0", "a/cat.png|flip=1"]
    entries = [(keys[0], path, False), (keys[1], path, True), (keys[0], path, False)]  # a repeat is computed once

    cache = DinoTokenCache(dino, processor, "tiny", tmp_path / "cache")
    cache.fill(entries)
    tokens = cache.get(keys)
    assert tokens.shape == (2, 256, 32) and cache.computed == 2
    for row, picture in zip(tokens, (image, mirrored)):  # one image per DINOv2 call
        torch.testing.assert_close(row, dino_patch_tokens(dino, dino_pixels(processor, [picture]))[0], rtol=0, atol=0)
    assert not torch.allclose(tokens[0], tokens[1])  # a mirrored image has other tokens
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2

    again = DinoTokenCache(dino, processor, "tiny", tmp_path / "cache")  # a new run reads the files
    again.fill(entries)
    assert torch.equal(again.get(keys), tokens) and again.computed == 0
    other_model = DinoTokenCache(dino, processor, "another-dino", tmp_path / "cache")
    other_model.fill(entries[:1])
    assert other_model.computed == 1  # files of another model are not trusted
    with pytest.raises(ConfigError, match="fill the cache"):
        other_model.get(keys)  # the mirrored image was never filled
