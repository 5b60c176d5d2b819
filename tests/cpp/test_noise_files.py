"""The noise files a C++ caller reads (sd4match_sdk.noise.save_pair_noise): exactly the draws of
``Matcher.match(..., seed=s)``, in the documented layout. Pure Python: no C++ build needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sd4match_sdk import ImageFeatures
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.images import load_image
from sd4match_sdk.noise import NOISE_FILES, draw_pair_noise, load_pair_noise, make_generator, save_pair_noise


def test_layout_and_round_trip(tmp_path):
    source, target = draw_pair_noise(make_generator(4), 3, (4, 8, 8))
    paths = save_pair_noise(tmp_path, source, target)
    assert [p.name for p in paths] == list(NOISE_FILES)
    shapes = [np.load(p).shape for p in paths]
    assert shapes == [(1, 4, 8, 8), (3, 4, 8, 8), (1, 4, 8, 8), (3, 4, 8, 8)]
    for p in paths:
        array = np.load(p)
        assert array.dtype == np.dtype("<f4") and array.flags.c_contiguous
    # The drawing order: source eps_vae, source noise, target eps_vae, target noise, one generator.
    g = torch.Generator().manual_seed(4)
    flat = torch.randn(2 * (1 + 3) * 4 * 8 * 8, generator=g)
    np.testing.assert_array_equal(np.concatenate([np.load(p).ravel() for p in paths]), flat.numpy())
    loaded = load_pair_noise(tmp_path)
    torch.testing.assert_close(loaded[0].noise, source.noise, rtol=0, atol=0)
    torch.testing.assert_close(loaded[1].eps_vae, target.eps_vae, rtol=0, atol=0)


def test_load_refuses_missing_or_non_float32(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pair_noise(tmp_path)
    save_pair_noise(tmp_path, *draw_pair_noise(make_generator(0), 1, (4, 2, 2)))
    np.save(tmp_path / NOISE_FILES[2], np.zeros((1, 4, 2, 2)))
    with pytest.raises(ConfigError, match="float64"):
        load_pair_noise(tmp_path)


def test_matcher_draw_pair_noise_is_what_match_uses(matcher256, demo_pair, tmp_path):
    """Features from the saved noise, fed to the backend, give match(seed)'s answer exactly."""
    points = [[100.0, 120.0], [400.5, 300.25]]
    expected = matcher256.match(*demo_pair, points, seed=9)
    save_pair_noise(tmp_path, *matcher256.draw_pair_noise(seed=9))
    noise = load_pair_noise(tmp_path)
    a, b = (load_image(p) for p in demo_pair)
    features = matcher256.backend.extract_pairs([a], [b], [None], [noise])
    source = ImageFeatures(features[:1], (a.shape[1], a.shape[0]))
    target = ImageFeatures(features[1:], (b.shape[1], b.shape[0]))
    got = matcher256.match_features(source, target, points)
    np.testing.assert_array_equal(got.points, expected.points)
    other = matcher256.draw_pair_noise(seed=10)
    assert not torch.equal(other[0].eps_vae, noise[0].eps_vae)
