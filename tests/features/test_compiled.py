"""The compiled path equals the eager reference, for every prompt kind (docs/design.md §13.21).

One compiled shape serves every test: ``memory_budget=1`` puts one pair (two images) in each
device batch, so ``match`` and ``match_batch`` run the same graphs, and every prompt kind reaches
the UNet as cross-attention keys and values. The first test compiles (about two minutes on a
2-core CPU); inductor's cache serves the others.
"""

from __future__ import annotations

import numpy as np
import pytest

from sd4match_sdk import ConfigError, Matcher
from sd4match_sdk.features.compiled import CompileMode, inductor_mode, resolve_compile_mode

POINTS = [[100.0, 200.0], [550.0, 500.0], [1099.0, 1098.0], [0.0, 0.0]]
KINDS = ["text", "single", "class", "cpm"]


def test_compile_modes() -> None:
    import torch

    assert resolve_compile_mode(False) is CompileMode.OFF and resolve_compile_mode(None) is CompileMode.OFF
    assert resolve_compile_mode(True) is CompileMode.DEFAULT
    assert resolve_compile_mode("max-autotune") is CompileMode.MAX_AUTOTUNE
    with pytest.raises(ConfigError, match="unknown compile mode"):
        resolve_compile_mode("fast")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert inductor_mode(CompileMode.DEFAULT, cuda) == "reduce-overhead"  # CUDA graphs
    assert inductor_mode(CompileMode.DEFAULT, cpu) == "default"
    assert inductor_mode(CompileMode.MAX_AUTOTUNE, cpu) == "max-autotune-no-cudagraphs"


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

    got, expected = compiled.match(src, trg, POINTS, category=cat, seed=3), eager.match(src, trg, POINTS, category=cat, seed=3)
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
