"""One image's features in a file: what ``sd4match features`` writes and ``Matcher.match_features`` reads."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sd4match_sdk import ImageFeatures
from sd4match_sdk.errors import ConfigError


def test_round_trip_keeps_the_map_size_category_and_metadata(matcher256, demo_pair, tmp_path) -> None:
    features = matcher256.features(demo_pair[0], seed=3)
    path = features.save(tmp_path / "a.safetensors", model="tiny", timestep=50, image_size=256)
    loaded = ImageFeatures.load(path)
    assert torch.equal(loaded.features, features.features) and loaded.size == features.size
    assert loaded.category is None and loaded.metadata["model"] == "tiny" and loaded.metadata["timestep"] == "50"
    target = matcher256.features(demo_pair[1], seed=4)
    points = [[100.0, 120.0], [300.0, 200.0]]
    expected = matcher256.match_features(features, target, points)
    got = matcher256.match_features(loaded, ImageFeatures.load(target.save(tmp_path / "b.safetensors", image_size=256)), points)
    assert (got.points == expected.points).all() and (got.scores == expected.scores).all()


def test_features_of_another_image_size_are_refused(matcher256, demo_pair, tmp_path) -> None:
    features = matcher256.features(demo_pair[0], seed=0)
    loaded = ImageFeatures.load(features.save(tmp_path / "a.safetensors", image_size=768))
    with pytest.raises(ConfigError, match="computed at image_size 768, this matcher uses 256"):
        matcher256.match_features(loaded, features, [[1.0, 1.0]])


def test_other_files_are_refused_with_the_fix(tmp_path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, other, metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="not an sd4match features file.*sd4match features IMAGES --out DIR"):
        ImageFeatures.load(other)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="cannot read"):
        ImageFeatures.load(tmp_path / "junk.safetensors")
    newer = tmp_path / "newer.safetensors"
    save_file({"features": torch.zeros(1, 2, 3, 3)}, newer, metadata={"format": "sd4match-features", "format_version": "9", "size": "[3, 3]"})
    with pytest.raises(ConfigError, match="format version '9'.*upgrade the SDK"):
        ImageFeatures.load(newer)
