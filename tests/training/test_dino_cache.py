"""The CPM's DINOv2 token cache: keyed by image and flip, persisted, tied to its model."""

from __future__ import annotations

import numpy as np
import torch

from sd4match_sdk.models.dino import dino_patch_tokens, dino_pixels
from sd4match_sdk.models.loading import load_dino
from sd4match_sdk.training.dino_cache import DinoTokenCache, dino_cache_key


def test_cache_keys_flip_and_persists(tiny_dino, tmp_path):
    dino, processor = load_dino(str(tiny_dino))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 180, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    keys = [dino_cache_key("a/cat.jpg", False), dino_cache_key("a/cat.jpg", True)]
    assert keys == ["a/cat.jpg|flip=0", "a/cat.jpg|flip=1"]

    cache = DinoTokenCache(dino, processor, "tiny", tmp_path / "cache")
    tokens = cache.get(keys, [image, mirrored])
    assert tokens.shape == (2, 256, 32) and cache.computed == 2
    expected = dino_patch_tokens(dino, dino_pixels(processor, [image, mirrored]))
    torch.testing.assert_close(tokens, expected)
    assert not torch.allclose(tokens[0], tokens[1])  # a mirrored image has other tokens

    again = DinoTokenCache(dino, processor, "tiny", tmp_path / "cache")  # a new run reads the files
    torch.testing.assert_close(again.get(keys, [image, mirrored]), tokens)
    assert again.computed == 0
    other_model = DinoTokenCache(dino, processor, "another-dino", tmp_path / "cache")
    other_model.get(keys[:1], [image])
    assert other_model.computed == 1  # files of another model are not trusted
