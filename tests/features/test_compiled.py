"""The compiled path equals the eager reference, for every prompt kind (docs/design.md §13.21).

One compiled shape serves every test: ``memory_budget=1`` puts one pair (two images) in each
device batch, so ``match`` and ``match_batch`` run the same graphs, and every prompt kind reaches
the UNet as cross-attention keys and values. The first test compiles (about two minutes on a
2-core CPU); inductor's cache serves the others.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sd4match_sdk import ConfigError, Matcher
from sd4match_sdk.features.compiled import (
    CompiledStages,
    CompileMode,
    inductor_mode,
    resolve_compile_mode,
    winograd_threshold,
)
from sd4match_sdk.models.features import SDFeatureExtractor
from sd4match_sdk.models.winograd import WinogradConv2d

POINTS = [[100.0, 200.0], [550.0, 500.0], [1099.0, 1098.0], [0.0, 0.0]]
KINDS = ["text", "single", "class", "cpm"]


def test_compile_modes() -> None:
    assert resolve_compile_mode(False) is CompileMode.OFF and resolve_compile_mode(None) is CompileMode.OFF
    assert resolve_compile_mode(True) is CompileMode.DEFAULT
    assert resolve_compile_mode("max-autotune") is CompileMode.MAX_AUTOTUNE
    with pytest.raises(ConfigError, match="unknown compile mode"):
        resolve_compile_mode("fast")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert inductor_mode(CompileMode.DEFAULT, cuda) == "reduce-overhead"  # CUDA graphs
    assert inductor_mode(CompileMode.DEFAULT, cpu) == "default"
    assert inductor_mode(CompileMode.MAX_AUTOTUNE, cpu) == "max-autotune-no-cudagraphs"
    assert winograd_threshold("auto", cpu) == 320 and winograd_threshold("auto", cuda) is None
    assert winograd_threshold(0, cuda) == 0 and winograd_threshold(None, cpu) is None
    for wrong in ("320", -1, True, 3.5):
        with pytest.raises(ConfigError, match="winograd_min_channels"):
            winograd_threshold(wrong, cpu)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_equals_eager(kind: str, tiny_sd, tiny_dino, export_prompts, demo_pair) -> None:
    prompt = "a photo of a {category}" if kind == "text" else str(export_prompts[kind])
    options = dict(prompt=prompt, ensemble=2, image_size=256, matching_backend="torch")
    if kind == "cpm":
        options["dino"] = str(tiny_dino)
    eager = Matcher.from_pretrained(str(tiny_sd), **options)
    compiled = Matcher.from_pretrained(str(tiny_sd), compile=True, memory_budget=1, **options)
    assert compiled.backend.compiled is not None and eager.backend.compiled is None
    cat, dog = ("cat", "dog") if kind in ("text", "class") else (None, None)
    src, trg = demo_pair

    got, expected = (
        compiled.match(src, trg, POINTS, category=cat, seed=3),
        eager.match(src, trg, POINTS, category=cat, seed=3),
    )
    np.testing.assert_allclose(got.points, expected.points, atol=2e-3)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)

    pairs = [(src, trg, POINTS, cat), (trg, src, [], cat), (trg, src, POINTS[:2], dog)]
    for got, expected in zip(compiled.match_batch(pairs, seed=4), eager.match_batch(pairs, seed=4)):
        assert len(got) == len(expected)
        np.testing.assert_allclose(got.points, expected.points, atol=2e-3)


def test_fixed_prompt_keys_and_values_are_projected_once(tiny_sd, export_prompts, demo_pair) -> None:
    compiled = Matcher.from_pretrained(
        str(tiny_sd), prompt=str(export_prompts["class"]), ensemble=2, image_size=256, compile=True, memory_budget=1
    )
    stages = compiled.backend.compiled
    calls = []
    original = stages.context_kv
    stages.context_kv = lambda context: calls.append(context.shape[0]) or original(context)
    src, trg = demo_pair
    for category in ("cat", "dog", "cat"):
        compiled.match(src, trg, POINTS[:1], category=category, seed=0)
    assert calls == [1, 1]  # one projection per category, none per call or ensemble member


def test_compiled_stages_run_wide_convolutions_by_winograd_on_the_cpu(sd_components) -> None:
    """Installed at construction (nothing compiles until the first call); the default threshold
    (docs/design.md §13.24) leaves the tiny model's narrow convolutions direct."""
    extractor = SDFeatureExtractor(sd_components.vae, sd_components.unet, sd_components.scheduler, 50)
    cpu = torch.device("cpu")
    assert CompiledStages(copy.deepcopy(extractor), CompileMode.DEFAULT, cpu).winograd_convolutions == 0
    wide = copy.deepcopy(extractor)
    convs = [m for m in wide.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    convertible = [m for m in convs if m.stride == (1, 1) and m.in_channels >= 64]
    stages = CompiledStages(wide, CompileMode.DEFAULT, cpu, winograd_min_channels=64)
    assert stages.winograd_convolutions == len(convertible) > 0
    assert sum(isinstance(m, WinogradConv2d) for m in wide.unet.modules()) == len(convertible)


def test_compiled_winograd_features_equal_eager(sd_components) -> None:
    """The compiled VAE encoder and UNet with every 3x3 convolution by Winograd, against the eager
    direct ones: the features, one image, E = 2."""
    extractor = SDFeatureExtractor(sd_components.vae, sd_components.unet, sd_components.scheduler, 50)
    stages = CompiledStages(copy.deepcopy(extractor), CompileMode.DEFAULT, torch.device("cpu"), winograd_min_channels=0)
    assert stages.winograd_convolutions > 10
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    eps_vae, noise = torch.randn(1, 4, 32, 32, generator=g), torch.randn(1, 2, 4, 32, 32, generator=g)
    context = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        expected = extractor(pixels, eps_vae, noise, context)
        got = stages.features(pixels, eps_vae, noise, stages.context_kv(context))
    torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)
