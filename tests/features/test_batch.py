"""The one batch assembly of every feature path: image order, noise stacking, per-pair values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sd4match_sdk.errors import ShapeError
from sd4match_sdk.features.batch import ImageBatch, interleave_pairs, per_image
from sd4match_sdk.images import sd_pixels
from sd4match_sdk.noise import draw_image_noise, draw_pair_noise, make_generator


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (20 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8) for i in range(n)]


def test_pairs_interleave_source_then_target():
    assert interleave_pairs(["s0", "s1"], ["t0", "t1"]) == ["s0", "t0", "s1", "t1"]
    with pytest.raises(ShapeError):
        interleave_pairs(["s0"], [])
    values = torch.arange(3.0)[:, None]
    assert per_image(values).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_pair_batch_is_the_images_and_noise_in_pair_order():
    sources, targets = _images(2, 0), _images(2, 1)
    generator = make_generator(3)
    noises = [draw_pair_noise(generator, 2, (4, 8, 8)) for _ in range(2)]
    batch = ImageBatch.from_pairs(sources, targets, noises, 128, ["cat", None])
    images = [sources[0], targets[0], sources[1], targets[1]]
    flat = [noises[0][0], noises[0][1], noises[1][0], noises[1][1]]
    assert torch.equal(batch.pixels, torch.cat([sd_pixels(img, 128) for img in images]))
    assert torch.equal(batch.eps_vae, torch.cat([n.eps_vae for n in flat]))
    assert torch.equal(batch.noise, torch.stack([n.noise for n in flat]))
    assert batch.noise.shape == (4, 2, 4, 8, 8) and batch.categories == ("cat", "cat", None, None)


def test_select_and_inconsistent_batches():
    images = _images(3)
    generator = make_generator(0)
    noises = [draw_image_noise(generator, 1, (4, 4, 4)) for _ in images]
    batch = ImageBatch.from_images(images, noises, 64, ["a", "b", "c"])
    picked = batch.select([2, 0])
    assert picked.categories == ("c", "a") and torch.equal(picked.pixels[0], batch.pixels[2])
    assert torch.equal(batch.select(slice(1, 3)).eps_vae, batch.eps_vae[1:3])
    with pytest.raises(ShapeError, match="inconsistent image batch"):
        ImageBatch(batch.pixels, batch.eps_vae[:2], batch.noise, batch.categories)
