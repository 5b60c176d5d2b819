"""Engines run by ONNX Runtime (CPU) against the PyTorch reference, for every prompt kind.

Acceptance (issue 5): fp32 features within 1e-4 of PyTorch, matches within 0.05 px for the same
seed. The tiny model's raw features reach ~1.5 in magnitude, so 1e-4 is a relative ~1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.demo import demo_images
from sd4match_sdk.errors import ConfigError, UnknownCategoryError
from sd4match_sdk.images import load_image, sd_pixels
from sd4match_sdk.noise import draw_pair_noise
from sd4match_sdk.ops.matching import l2_normalize

FEATURE_ATOL = 1e-4
MATCH_ATOL_PX = 0.05
POINTS = [[100.0, 120.0], [200.5, 80.25], [33.3, 250.0], [400.0, 300.0]]


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    a, b = demo_images()
    return load_image(a), load_image(b)


def _torch_matcher(model, prompt, feature, dino=None) -> Matcher:
    return Matcher.from_pretrained(
        str(model), prompt=None if prompt is None else str(prompt), dino=None if dino is None else str(dino),
        image_size=feature.image_size, timestep=feature.timestep, ensemble=feature.ensemble,
    )  # fmt: skip


def _assert_pairs_equal(reference: Matcher, engine: Matcher, images, category) -> None:
    a, b = images
    pairs = [(a, b, POINTS, category), (b, a, POINTS, category), (a, a, POINTS[:2], category)]
    expected = reference.match_batch(pairs, seed=7)
    got = engine.match_batch(pairs, seed=7)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.points, e.points, atol=MATCH_ATOL_PX, rtol=0)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-3, rtol=0)
    single = engine.match(a, b, POINTS, category=category, seed=7)
    np.testing.assert_allclose(single.points, got[0].points, atol=1e-4, rtol=0)  # batching changes nothing


def _assert_pair_features_equal(reference: Matcher, engine: Matcher, images, category) -> None:
    a, b = images
    g = torch.Generator().manual_seed(3)
    noises = [draw_pair_noise(g, engine.feature_config.ensemble, engine.backend.latent_shape) for _ in range(2)]
    expected = reference.backend.extract_pairs([a, b], [b, a], [category] * 2, noises)
    got = engine.backend.extract_pairs([a, b], [b, a], [category] * 2, noises)
    assert got.shape == expected.shape
    torch.testing.assert_close(got.cpu(), expected.cpu(), atol=FEATURE_ATOL, rtol=0)


class TestSingle:
    def test_features_and_matches(self, engine_single, export_tiny_sd, export_prompts, images, small_feature):
        reference = _torch_matcher(export_tiny_sd, export_prompts["single"], small_feature)
        engine = Matcher.from_pretrained(str(engine_single))
        assert engine.backend.name == "onnxruntime" and engine.feature_config == reference.feature_config
        fa = engine.features(images[0], seed=1)
        torch.testing.assert_close(
            fa.features, reference.features(images[0], seed=1).features, atol=FEATURE_ATOL, rtol=0
        )
        _assert_pair_features_equal(reference, engine, images, None)
        _assert_pairs_equal(reference, engine, images, None)

    def test_graph_outputs_raw_and_normalised_maps(
        self, engine_single, export_tiny_sd, export_prompts, images, small_feature
    ):
        """The VAE graph equals encode_latents; the UNet graph's two outputs are the raw mean and its L2 norm."""
        import onnxruntime as ort

        from sd4match_sdk.models.features import SDFeatureExtractor
        from sd4match_sdk.models.loading import load_sd_components
        from sd4match_sdk.prompts import PromptContexts, load_prompt

        parts = load_sd_components(str(export_tiny_sd))
        extractor = SDFeatureExtractor(parts.vae, parts.unet, parts.scheduler, small_feature.timestep)
        context = PromptContexts(
            load_prompt(str(export_prompts["single"])), parts.tokenizer, parts.text_encoder
        ).fixed()
        g = torch.Generator().manual_seed(0)
        pixels = torch.cat([sd_pixels(img, small_feature.image_size) for img in images])
        eps = torch.randn((2, 4, 32, 32), generator=g)
        noise = torch.randn((2, small_feature.ensemble, 4, 32, 32), generator=g)
        with torch.no_grad():
            latents = extractor.encode_latents(pixels, eps)
            raw = extractor.unet_features(latents, noise, context.expand(2, -1, -1))
        vae = ort.InferenceSession(str(engine_single / "vae_encoder.onnx"), providers=["CPUExecutionProvider"])
        (got_latents,) = vae.run(None, {"pixels": pixels.numpy(), "eps_vae": eps.numpy()})
        np.testing.assert_allclose(got_latents, latents.numpy(), atol=1e-5, rtol=0)
        unet = ort.InferenceSession(str(engine_single / "unet.onnx"), providers=["CPUExecutionProvider"])
        features, normalized = unet.run(
            ["features", "features_normalized"], {"latents": latents.numpy(), "noise": noise.numpy()}
        )
        np.testing.assert_allclose(features, raw.numpy(), atol=FEATURE_ATOL, rtol=0)
        np.testing.assert_allclose(normalized, l2_normalize(raw, dim=1).numpy(), atol=1e-5, rtol=0)
        assert not np.allclose(features, normalized, atol=1e-2)  # the raw map is not normalised
        np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-4)

    def test_engine_refuses_a_prompt_argument(self, engine_single):
        with pytest.raises(ConfigError, match="baked in"):
            Matcher.from_pretrained(str(engine_single), prompt="a photo of a cat")


class TestClass:
    def test_features_and_matches_per_category(
        self, engine_class, export_tiny_sd, export_prompts, images, small_feature
    ):
        reference = _torch_matcher(export_tiny_sd, export_prompts["class"], small_feature)
        engine = Matcher.from_pretrained(str(engine_class))
        assert engine.categories == reference.categories == sorted(["dog", "cat", "bird"])
        for category in ("bird", "dog"):
            f_engine = engine.features(images[1], category=category, seed=2).features
            torch.testing.assert_close(
                f_engine, reference.features(images[1], category=category, seed=2).features, atol=FEATURE_ATOL, rtol=0
            )
        dog = engine.features(images[1], category="dog", seed=2).features
        cat = engine.features(images[1], category="cat", seed=2).features
        assert (dog - cat).abs().max() > 1e-3  # the class index really selects another context
        _assert_pair_features_equal(reference, engine, images, "cat")  # 4 images, max_batch 3: two chunks
        _assert_pairs_equal(reference, engine, images, "cat")

    def test_mixed_categories_in_one_batch(self, engine_class, export_tiny_sd, export_prompts, images, small_feature):
        reference = _torch_matcher(export_tiny_sd, export_prompts["class"], small_feature)
        engine = Matcher.from_pretrained(str(engine_class))
        a, b = images
        pairs = [(a, b, POINTS, "cat"), (b, a, POINTS, "bird")]
        for e, g in zip(reference.match_batch(pairs, seed=5), engine.match_batch(pairs, seed=5)):
            np.testing.assert_allclose(g.points, e.points, atol=MATCH_ATOL_PX, rtol=0)

    def test_unknown_or_missing_category(self, engine_class, images):
        engine = Matcher.from_pretrained(str(engine_class))
        with pytest.raises(UnknownCategoryError, match="cat"):
            engine.match(images[0], images[1], POINTS, category="horse")
        with pytest.raises(UnknownCategoryError, match="Class prompt"):
            engine.match(images[0], images[1], POINTS)

    def test_external_data_directory_can_move(self, engine_class, tmp_path, images):
        """Weights in <graph>.onnx.data are found relative to the graph after the directory moves."""
        import shutil

        moved = tmp_path / "moved"
        shutil.copytree(engine_class, moved)
        engine = Matcher.from_pretrained(str(moved))
        original = Matcher.from_pretrained(str(engine_class))
        torch.testing.assert_close(
            engine.features(images[0], category="cat", seed=0).features,
            original.features(images[0], category="cat", seed=0).features,
        )


class TestCPM:
    def test_features_and_matches(
        self, engine_cpm, export_tiny_sd, export_tiny_dino, export_prompts, images, small_feature
    ):
        reference = _torch_matcher(export_tiny_sd, export_prompts["cpm"], small_feature, dino=export_tiny_dino)
        engine = Matcher.from_pretrained(str(engine_cpm))
        assert engine.prompt_kind == "cpm"
        a, b = images
        contexts = engine.backend.pair_contexts([a, b], [b, a])
        expected = reference.backend.pair_contexts([a, b], [b, a], [None, None])
        torch.testing.assert_close(contexts, expected, atol=1e-4, rtol=0)
        assert (contexts[0] - contexts[1]).abs().max() > 1e-4  # the context depends on the pair's order
        _assert_pair_features_equal(reference, engine, images, None)
        _assert_pairs_equal(reference, engine, images, None)

    def test_single_image_features_are_refused(self, engine_cpm, images):
        with pytest.raises(ConfigError, match="both images"):
            Matcher.from_pretrained(str(engine_cpm)).features(images[0])


class TestText768:
    def test_features_and_matches_at_768(self, engine_text768, export_tiny_sd, images):
        from sd4match_sdk.config import FeatureConfig

        feature = FeatureConfig(image_size=768, timestep=50, ensemble=1)
        reference = _torch_matcher(export_tiny_sd, None, feature)
        engine = Matcher.from_pretrained(str(engine_text768))
        f_engine = engine.features(images[0], seed=4).features
        assert tuple(f_engine.shape) == (1, 64, 48, 48)
        torch.testing.assert_close(f_engine, reference.features(images[0], seed=4).features, atol=FEATURE_ATOL, rtol=0)
        expected = reference.match(images[0], images[1], POINTS, seed=4)
        got = engine.match(images[0], images[1], POINTS, seed=4)
        np.testing.assert_allclose(got.points, expected.points, atol=MATCH_ATOL_PX, rtol=0)

    def test_attention_is_chunked_at_768(self, engine_text768, engine_single):
        """At 768 px the first level attends over 96*96 = 9216 tokens: 9 query chunks of 1024."""
        import onnx

        from sd4match_sdk.engine.directory import read_manifest

        def softmaxes(engine):
            return sum(
                n.op_type == "Softmax"
                for n in onnx.load(str(engine / "unet.onnx"), load_external_data=False).graph.node
            )

        assert read_manifest(engine_text768).attention_query_chunk == 1024
        # 256 px: 20 attention modules, one softmax each. 768 px: the 2 self-attentions over 9216
        # tokens take 9 chunks each (+16 softmaxes), the 2 over 48*48 = 2304 tokens take 3 (+4);
        # cross-attention (77 keys) is not chunked.
        assert (softmaxes(engine_single), softmaxes(engine_text768)) == (20, 40)


def test_an_engine_from_an_euler_scheduler_directory_agrees_with_the_torch_path(engine_euler, euler_model, export_tiny_sd, images):
    """docs/design.md §3.7: whatever class scheduler/ names, both paths noise with the forward process."""
    from sd4match_sdk.config import FeatureConfig

    feature = FeatureConfig(image_size=128, timestep=50, ensemble=1)
    a, b = images
    engine = Matcher.from_pretrained(str(engine_euler))
    torch_euler, torch_ddim = _torch_matcher(euler_model, None, feature), _torch_matcher(export_tiny_sd, None, feature)
    expected = torch_euler.features(a, seed=1).features
    assert torch.equal(expected, torch_ddim.features(a, seed=1).features)
    torch.testing.assert_close(engine.features(a, seed=1).features, expected, atol=FEATURE_ATOL, rtol=0)
    got, want = engine.match(a, b, POINTS, seed=1).points, torch_euler.match(a, b, POINTS, seed=1).points
    np.testing.assert_allclose(got, want, atol=MATCH_ATOL_PX, rtol=0)
