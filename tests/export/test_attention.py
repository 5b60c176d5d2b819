"""The exported attention: query chunks and float32 logits change nothing but memory and overflow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.export.attention import ExportAttnProcessor, attention, set_export_attention


def _qkv(seed: int = 0, lq: int = 37, lk: int = 37, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((2, 3, n, 8), generator=g).to(dtype) for n in (lq, lk, lk))


@pytest.mark.parametrize("chunk", [None, 0, 1, 5, 16, 37, 100])
def test_chunked_attention_equals_sdpa(chunk):
    q, k, v = _qkv()
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v, 8**-0.5, chunk, upcast=False), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("lk", [7, 40])
def test_cross_attention_short_and_long_keys(lk):
    q, k, v = _qkv(lq=50, lk=lk)
    torch.testing.assert_close(
        attention(q, k, v, 0.3, 16, upcast=False),
        F.scaled_dot_product_attention(q, k, v, scale=0.3),
        atol=1e-6,
        rtol=1e-5,
    )


def test_upcast_keeps_float16_logits_from_overflowing():
    """Logits beyond float16's range (65504): float16 matmul gives inf/nan, the upcast stays finite."""
    q, k, v = _qkv(1, lq=4, lk=6)
    q, k = q * 120, k * 120  # |q.k| ~ 1e5 with scale 1
    reference = attention(q, k, v, 1.0, None, upcast=False)  # float32 reference
    half = attention(q.half(), k.half(), v.half(), 1.0, 2, upcast=True)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, atol=2e-2, rtol=1e-2)
    naive = torch.softmax(torch.matmul(q.half(), k.half().transpose(-1, -2)), dim=-1)
    assert not torch.isfinite(naive).all()  # what upcast_attention protects against


def test_processor_equals_the_vae_mid_block_attention():
    """The VAE's attention: group norm inside, spatial input, residual connection, rescale."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(
        query_dim=16, heads=1, dim_head=16, rescale_output_factor=1.0, eps=1e-6, norm_num_groups=4,
        residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True,
    ).eval()  # fmt: skip
    hidden = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        expected = attn(hidden)
        attn.set_processor(ExportAttnProcessor(query_chunk=5))
        torch.testing.assert_close(attn(hidden), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spatial", [False, True])
def test_processor_equals_diffusers_attention_module(spatial):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    self_attn = Attention(query_dim=16, heads=2, dim_head=8, upcast_attention=True).eval()
    cross_attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, upcast_attention=True).eval()
    tokens = torch.randn(2, 16, 5, 5) if spatial else torch.randn(2, 25, 16)
    context = torch.randn(2, 7, 12)
    with torch.no_grad():
        for attn, kwargs in ((self_attn, {}), (cross_attn, {"encoder_hidden_states": context})):
            attn.set_processor(AttnProcessor2_0())
            expected = attn(tokens, **kwargs)
            attn.set_processor(ExportAttnProcessor(query_chunk=4))
            torch.testing.assert_close(attn(tokens, **kwargs), expected, atol=1e-6, rtol=1e-5)
        with pytest.raises(ConfigError, match="SD 2.1"):
            self_attn(torch.randn(2, 25, 16), attention_mask=torch.zeros(2, 1, 25))


def test_set_export_attention_counts_modules():
    from diffusers.models.attention_processor import Attention

    model = torch.nn.ModuleList(
        [
            Attention(query_dim=8, heads=1, dim_head=8),
            torch.nn.Linear(2, 2),
            Attention(query_dim=8, heads=2, dim_head=4),
        ]
    )
    assert set_export_attention(model, 4, upcast=False) == 2
    assert all(isinstance(m.processor, ExportAttnProcessor) for m in model if hasattr(m, "to_q"))
