"""The fast attention equals diffusers' processors (docs/design.md §13.21), without compiling."""

from __future__ import annotations

import copy

import pytest
import torch

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.models.attention import FastAttnProcessor, context_keys_values, use_fast_attention
from sd4match_sdk.models.unet import TruncatedUNet


@pytest.fixture(scope="module")
def unets(sd_components):
    """The tiny truncated UNet with diffusers' processors, and a copy with the fast attention."""
    reference = TruncatedUNet(sd_components.unet)
    fast = copy.deepcopy(reference)
    return reference, fast, use_fast_attention(fast)


def test_every_attention_gets_the_processor_and_fused_projections(unets) -> None:
    _, fast, cross = unets
    processors = [m.processor for m in fast.modules() if hasattr(m, "set_processor")]
    assert processors and all(isinstance(p, FastAttnProcessor) for p in processors)
    attn = fast.get_submodule(cross[0])
    assert attn.is_cross_attention and attn.to_kv.weight.shape[0] == 2 * attn.to_k.weight.shape[0]
    assert not any(p.requires_grad for p in fast.parameters())


def test_fast_attention_equals_the_default(unets) -> None:
    """One context per row, one per image (E=3 members each), or precomputed keys and values."""
    reference, fast, cross = unets
    torch.manual_seed(0)
    b, e = 2, 3
    sample = torch.randn(b * e, 4, 32, 32)
    context = torch.randn(b, 77, 32)
    t = torch.tensor(50)
    with torch.no_grad():
        expected = reference(sample, t, context.repeat_interleave(e, dim=0))
        per_row = fast(sample, t, context.repeat_interleave(e, dim=0))
        per_image = fast(sample, t, context)
        kv = context_keys_values(fast, context)
        precomputed = fast(sample, t, None, kv)
    assert set(kv) == set(cross) and kv[cross[0]][0].shape[0] == b
    for got in (per_row, per_image, precomputed):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(fast(sample, t, None, context_keys_values(fast, context.flip(0))), precomputed)


def test_the_vae_attention_equals_the_default(sd_components) -> None:
    encoder = sd_components.vae.encoder
    fast = copy.deepcopy(encoder)
    use_fast_attention(fast)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), encoder(x), atol=1e-5, rtol=1e-5)


def test_unsupported_attention_is_refused() -> None:
    from diffusers.models.attention_processor import Attention

    with pytest.raises(ConfigError, match="qk_norm|norm_q|does not implement"):
        use_fast_attention(torch.nn.ModuleList([Attention(8, heads=2, dim_head=4, qk_norm="layer_norm")]))
