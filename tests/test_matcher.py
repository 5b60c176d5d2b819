"""The public Matcher: determinism, batching, feature reuse, inputs and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sd4match_sdk import ImageError, ImageFeatures, Matcher, MatchConfig, PointsError, UnknownCategoryError
from sd4match_sdk.errors import ConfigError, SD4MatchError
from sd4match_sdk.images import load_image, sd_pixels
from sd4match_sdk.prompts import PromptKind

POINTS = [[100.0, 200.0], [550.0, 500.0], [1099.0, 1098.0], [0.0, 0.0]]


def test_same_seed_same_matches(matcher256: Matcher, demo_pair) -> None:
    a = matcher256.match(*demo_pair, POINTS, seed=3)
    b = matcher256.match(*demo_pair, POINTS, seed=3)
    c = matcher256.match(*demo_pair, POINTS, seed=4)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.points.shape == (4, 2) and a.points.dtype == np.float32 and a.scores.shape == (4,)
    assert not np.array_equal(a.points, c.points)
    np.testing.assert_array_equal(a.query, np.asarray(POINTS, np.float32))


def test_generator_equals_seed(matcher256: Matcher, demo_pair) -> None:
    a = matcher256.match(*demo_pair, POINTS, seed=5)
    b = matcher256.match(*demo_pair, POINTS, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a.points, b.points)
    with pytest.raises(ConfigError):
        matcher256.match(*demo_pair, POINTS, seed=5, generator=torch.Generator())


def test_match_equals_manual_pipeline(matcher256: Matcher, demo_pair) -> None:
    """The noise order (docs/design.md §7.2) and the coordinate maps, recomputed by hand."""
    from sd4match_sdk.ops.geometry import frame_to_grid, grid_to_frame
    from sd4match_sdk.ops.matching import match_points

    torch_matcher = Matcher(matcher256.backend, matching_backend="torch")  # compare with the torch ops exactly
    result = torch_matcher.match(*demo_pair, POINTS, seed=11)
    g = torch.Generator().manual_seed(11)
    shape = (4, 32, 32)
    eps_a, noise_a = torch.randn(1, *shape, generator=g), torch.randn(2, *shape, generator=g)
    eps_b, noise_b = torch.randn(1, *shape, generator=g), torch.randn(2, *shape, generator=g)
    rgb = [load_image(p) for p in demo_pair]
    backend = matcher256.backend
    ctx = backend.prompt.fixed(None)
    with torch.no_grad():
        feats = backend.extractor(
            torch.cat([sd_pixels(rgb[0], 256), sd_pixels(rgb[1], 256)]),
            torch.cat([eps_a, eps_b]), torch.stack([noise_a, noise_b]), ctx.repeat(2, 1, 1),
        )
    (w0, h0), (w1, h1) = [(im.shape[1], im.shape[0]) for im in rgb]
    q = torch.tensor(POINTS) * torch.tensor([256 / w0, 256 / h0])
    coords, _ = match_points(feats[:1], feats[1:], frame_to_grid(q, 256, (16, 16))[None])
    expected = grid_to_frame(coords[0], 256, (16, 16)) * torch.tensor([w1 / 256, h1 / 256])
    np.testing.assert_allclose(result.points, expected.numpy(), atol=1e-4)


def test_match_batch_equals_single_calls(matcher256: Matcher, demo_pair) -> None:
    src, trg = demo_pair
    pairs = [(src, trg, POINTS), (trg, src, [[10.0, 20.0]]), (src, src, []), (trg, trg, [[5.0, 5.0], [900.0, 900.0]])]
    batched = matcher256.match_batch(pairs, seed=9)
    for pair, got in zip(pairs, batched):
        single = matcher256.match(*pair, seed=9)
        assert len(got) == len(pair[2])
        np.testing.assert_allclose(got.points, single.points, atol=1e-3)
        np.testing.assert_allclose(got.scores, single.scores, atol=1e-4)


def test_match_batch_with_one_generator_per_pair(matcher256: Matcher, demo_pair) -> None:
    src, trg = demo_pair
    pairs = [(src, trg, POINTS), (trg, src, [[10.0, 20.0]])]
    batched = matcher256.match_batch(pairs, generators=[torch.Generator().manual_seed(s) for s in (4, 5)])
    for pair, s, got in zip(pairs, (4, 5), batched):
        np.testing.assert_allclose(got.points, matcher256.match(*pair, seed=s).points, atol=1e-3)
    with pytest.raises(ConfigError, match="one generator per pair"):
        matcher256.match_batch(pairs, generators=[None])


def test_features_batch_equals_single_images(matcher256: Matcher, demo_pair) -> None:
    seeds = (7, 8, 7)
    images = [demo_pair[0], demo_pair[1], demo_pair[0]]
    batched = matcher256.features_batch(images, generators=[torch.Generator().manual_seed(s) for s in seeds])
    assert [f.size for f in batched] == [(1100, 1099), (965, 964), (1100, 1099)]
    for image, s, got in zip(images, seeds, batched):
        single = matcher256.features(image, seed=s)
        torch.testing.assert_close(got.features, single.features, atol=1e-4, rtol=1e-4)  # batch of 3 vs 1: float rounding
    torch.testing.assert_close(batched[0].features, batched[2].features)  # same image, same seed
    assert matcher256.features_batch([]) == []
    with pytest.raises(ConfigError, match="one category and one generator per image"):
        matcher256.features_batch(images, categories=[None])


def test_features_reuse_equals_match(matcher256: Matcher, demo_pair) -> None:
    g = torch.Generator().manual_seed(21)
    fa = matcher256.features(demo_pair[0], generator=g)
    fb = matcher256.features(demo_pair[1], generator=g)  # continues the same stream: A first, then B
    assert isinstance(fa, ImageFeatures) and fa.features.shape == (1, 64, 16, 16) and fa.size == (1100, 1099)
    reused = matcher256.match_features(fa, fb, POINTS)
    direct = matcher256.match(*demo_pair, POINTS, seed=21)
    np.testing.assert_allclose(reused.points, direct.points, atol=1e-3)  # batch of 1 vs 2: float rounding


def test_coordinate_round_trip_non_square(matcher256: Matcher) -> None:
    """Identical feature maps and NN matching: a query on a cell centre lands on the same cell."""
    nn_matcher = Matcher(matcher256.backend, MatchConfig(method="nn"))
    torch.manual_seed(0)
    feats = torch.randn(1, 64, 16, 16)
    size0, size1 = (451, 300), (640, 1001)
    cells = torch.tensor([[0.0, 0.0], [3.0, 7.0], [15.0, 15.0], [12.0, 1.0]])
    frame = cells * 255 / 15
    query = frame * torch.tensor([size0[0] / 256, size0[1] / 256])
    result = nn_matcher.match_features(ImageFeatures(feats, size0), ImageFeatures(feats.clone(), size1), query.numpy())
    expected = frame * torch.tensor([size1[0] / 256, size1[1] / 256])
    np.testing.assert_allclose(result.points, expected.numpy(), atol=1e-3)


def test_image_types_agree(matcher256: Matcher, demo_pair, tmp_path: Path) -> None:
    rgb = load_image(demo_pair[0])
    pil = Image.open(demo_pair[0])
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    base = matcher256.match(demo_pair[0], demo_pair[1], POINTS, seed=1)
    for image in (rgb, pil, rgba):
        np.testing.assert_array_equal(matcher256.match(image, demo_pair[1], POINTS, seed=1).points, base.points)
    assert load_image(gray).shape == rgb.shape
    assert (load_image(gray)[..., 0] == load_image(gray)[..., 2]).all()


class TestBadInput:
    def test_missing_and_unreadable_images(self, matcher256: Matcher, demo_pair, tmp_path: Path) -> None:
        with pytest.raises(ImageError, match="not found"):
            matcher256.match(tmp_path / "nope.png", demo_pair[1], POINTS)
        junk = tmp_path / "junk.png"
        junk.write_text("not an image")
        with pytest.raises(ImageError, match="cannot decode"):
            matcher256.match(junk, demo_pair[1], POINTS)

    @pytest.mark.parametrize("array, match", [
        (np.zeros((10, 10, 5), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((3, 10, 10, 3), np.uint8), "shape"),
        (torch.zeros(3, 10, 10), "tensors are not accepted"),
        (12, "unsupported image type"),
    ])
    def test_bad_arrays(self, matcher256: Matcher, demo_pair, array, match: str) -> None:
        with pytest.raises(ImageError, match=match):
            matcher256.match(array, demo_pair[1], POINTS)

    def test_points_outside_or_nan_name_indices(self, matcher256: Matcher, demo_pair) -> None:
        bad = [[10, 10], [1100, 5], [5, float("nan")], [-1, 3], [4, 4]]
        with pytest.raises(PointsError, match=r"indices \[1, 2, 3\]") as err:
            matcher256.match(*demo_pair, bad)
        assert err.value.indices == [1, 2, 3]

    @pytest.mark.parametrize("points", [[[1, 2, 3]], [1, 2], [["a", "b"]]])
    def test_malformed_points(self, matcher256: Matcher, demo_pair, points) -> None:
        with pytest.raises(PointsError):
            matcher256.match(*demo_pair, points)

    def test_empty_points_give_empty_result(self, matcher256: Matcher, demo_pair) -> None:
        for empty in ([], np.zeros((0, 2))):
            result = matcher256.match(*demo_pair, empty)
            assert result.points.shape == (0, 2) and result.scores.shape == (0,)

    def test_all_errors_share_the_base_class(self) -> None:
        assert issubclass(PointsError, SD4MatchError) and issubclass(PointsError, ValueError)

    def test_unknown_settings(self, tiny_sd: Path) -> None:
        with pytest.raises(ConfigError, match="kernel_softargmax"):
            Matcher.from_pretrained(str(tiny_sd), method="bogus")
        with pytest.raises(ConfigError, match="multiple of 64"):
            Matcher.from_pretrained(str(tiny_sd), image_size=500)


def test_class_prompt_needs_known_category(tiny_sd: Path, sd_components, demo_pair, tmp_path: Path) -> None:
    torch.manual_seed(0)
    embeds = {c: torch.randn(1, 77, 32) for c in ("cat", "dog")}
    torch.save(embeds, tmp_path / "caption.pt")
    m = Matcher.from_pretrained(str(tiny_sd), prompt=str(tmp_path / "caption.pt"), ensemble=1, image_size=256)
    assert m.prompt_kind is PromptKind.CLASS and m.categories == ["cat", "dog"]
    with pytest.raises(UnknownCategoryError, match="cat, dog"):
        m.match(*demo_pair, POINTS)
    with pytest.raises(UnknownCategoryError, match="'bird'"):
        m.match(*demo_pair, POINTS, category="bird")
    cat = m.match(*demo_pair, POINTS, category="cat", seed=0)
    dog = m.match(*demo_pair, POINTS, category="dog", seed=0)
    assert not np.array_equal(cat.points, dog.points)  # the category's prompt really conditions the UNet


def test_cpm_end_to_end(tiny_sd: Path, tiny_dino: Path, demo_pair, tmp_path: Path) -> None:
    from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule

    torch.manual_seed(0)
    torch.save(ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32)).state_dict(), tmp_path / "ckpt.pt")
    m = Matcher.from_pretrained(str(tiny_sd), prompt=str(tmp_path / "ckpt.pt"), dino=str(tiny_dino), ensemble=1, image_size=256)
    a = m.match(*demo_pair, POINTS, seed=2)
    b = m.match(*demo_pair, POINTS, seed=2)
    np.testing.assert_array_equal(a.points, b.points)
    batched = m.match_batch([(demo_pair[0], demo_pair[1], POINTS), (demo_pair[1], demo_pair[0], [[3.0, 4.0]])], seed=2)
    np.testing.assert_allclose(batched[0].points, a.points, atol=1e-3)
    swapped = m.match(demo_pair[1], demo_pair[0], [[3.0, 4.0]], seed=2)
    np.testing.assert_allclose(batched[1].points, swapped.points, atol=1e-3)
    with pytest.raises(ConfigError, match="both images"):
        m.features(demo_pair[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vae_dtype": "float16"}, r"vae_dtype must be None or a floating torch\.dtype .*vae_dtype=torch\.float16"),
        ({"vae_dtype": torch.int64}, r"vae_dtype must be None or a floating torch\.dtype"),
        ({"compile": "fast"}, r"unknown compile mode"),
        ({"memory_budget": 0}, r"memory_budget must lie in \[1, inf\] \(got 0\)"),
        ({"memory_budget": 1.5}, r"memory_budget must be an integer \(got 1\.5"),
    ],
)
def test_fast_path_arguments_are_checked_before_loading(tiny_sd: Path, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Matcher.from_pretrained(str(tiny_sd), **kwargs)
