"""Attention for the fast path: fused projections, and cross-attention keys/values computed once.

The same math as diffusers' ``AttnProcessor2_0`` (``scaled_dot_product_attention`` over the
projected query, keys and values), organised for speed (docs/design.md §13.21):

* **Fused projections.** Self-attention multiplies by ``[W_q | W_k | W_v]`` in one matrix
  product, cross-attention by ``[W_k | W_v]`` (diffusers' ``Attention.fuse_projections``).
* **Keys and values once per context.** Every ensemble member of an image attends to the same
  77-token context, so its keys and values are projected once per image and repeated over the
  ``E`` members (the context may come as ``(B, L, D)`` for a ``B * E`` batch). A fixed prompt's
  keys and values can be computed once for good (:func:`context_keys_values`) and passed in as
  ``context_kv``, so the UNet never projects that context again.

Install it with :func:`use_fast_attention`; the default path keeps diffusers' own processors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["ContextKV", "FastAttnProcessor", "context_keys_values", "use_fast_attention"]

#: ``{attention module name: (keys, values)}``, each ``(N, heads, L, head_dim)``.
ContextKV = dict[str, tuple[Tensor, Tensor]]


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, L, H*d)`` -> ``(B, H, L, d)``."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


def _attention_modules(module: nn.Module) -> list[tuple[str, Any]]:
    """The diffusers ``Attention`` modules of ``module`` (they own ``to_q`` and a processor)."""
    return [(n, m) for n, m in module.named_modules() if hasattr(m, "set_processor") and hasattr(m, "to_q")]


def cross_attention_kv(attn: Any, context: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values of one cross-attention layer: ``(N, L, D)`` -> two ``(N, H, L, d)``."""
    if getattr(attn, "to_kv", None) is not None:
        key, value = attn.to_kv(context).chunk(2, dim=-1)
    else:
        key, value = attn.to_k(context), attn.to_v(context)
    return _split_heads(key, attn.heads), _split_heads(value, attn.heads)


def _self_attention_qkv(attn: Any, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if getattr(attn, "to_qkv", None) is not None:
        query, key, value = attn.to_qkv(hidden).chunk(3, dim=-1)
    else:
        query, key, value = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)
    return tuple(_split_heads(t, attn.heads) for t in (query, key, value))  # type: ignore[return-value]


class FastAttnProcessor:
    """A diffusers attention processor: fused projections, per-image or precomputed context keys/values.

    Args:
        name: the attention module's name in the model, the key of its entry in ``context_kv``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        context_kv: ContextKV | None = None,
    ) -> Tensor:
        residual = hidden_states
        spatial = hidden_states.ndim == 4
        if spatial:  # the VAE's mid-block attention works on (B, C, H, W)
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.is_cross_attention:
            query = _split_heads(attn.to_q(hidden_states), attn.heads)
            if context_kv is not None:
                key, value = context_kv[self.name]
            else:
                key, value = cross_attention_kv(attn, encoder_hidden_states)
            if key.shape[0] != batch:  # one context per image, E ensemble members each (image-major)
                key, value = (t.repeat_interleave(batch // key.shape[0], dim=0) for t in (key, value))
        else:
            query, key, value = _self_attention_qkv(attn, hidden_states)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _check_supported(name: str, attn: Any) -> None:
    found = [n for n in ("spatial_norm", "norm_q", "norm_k", "norm_cross") if getattr(attn, n, None)]
    if found or getattr(attn, "only_cross_attention", False):
        raise ConfigError(
            f"attention {name!r} uses {found or 'only_cross_attention'}, which the fast path does not implement; "
            "SD 2.1 uses none of these: load an SD 2.1 checkpoint, or run without compile="
        )


@torch.no_grad()
def use_fast_attention(module: nn.Module, fuse_projections: bool = True) -> list[str]:
    """Give every attention module of ``module`` a :class:`FastAttnProcessor` (fusing its projections).

    Returns:
        The names of the cross-attention modules, the keys of a ``context_kv`` dict.

    Raises:
        ConfigError: an attention configuration SD 2.1 does not use.
    """
    cross = []
    for name, attn in _attention_modules(module):
        _check_supported(name, attn)
        if fuse_projections and not getattr(attn, "fused_projections", False):
            attn.fuse_projections(fuse=True)
            for fused in ("to_qkv", "to_kv"):
                if getattr(attn, fused, None) is not None:
                    getattr(attn, fused).requires_grad_(False)
        attn.set_processor(FastAttnProcessor(name))
        if attn.is_cross_attention:
            cross.append(name)
    return cross


@torch.no_grad()
def context_keys_values(module: nn.Module, context: Tensor) -> ContextKV:
    """Keys and values of every cross-attention layer of ``module`` for ``(N, L, D)`` contexts.

    Pass them to :class:`~sd4match_sdk.models.unet.TruncatedUNet` as ``context_kv``: a fixed prompt
    is then projected once, not once per call and ensemble member.
    """
    out = {}
    for name, attn in _attention_modules(module):
        if attn.is_cross_attention:  # contiguous: one memory layout for every caller (static graphs guard on strides)
            key, value = cross_attention_kv(attn, context.to(attn.to_q.weight.dtype))
            out[name] = (key.contiguous(), value.contiguous())
    return out
