"""The attention the exported UNet runs: query-chunked, optionally with float32 logits.

Two problems of the exported graph, one processor:

* **Memory.** PyTorch's ``scaled_dot_product_attention`` never materialises the attention
  matrix on the CPU or with flash kernels, but in ONNX it becomes ``MatMul -> Softmax -> MatMul``
  with a full ``(B*E, heads, L, L)`` matrix. At 768 px SD 2.1's first level attends over
  ``L = 96*96 = 9216`` tokens: 1.7 GB per ensemble member and head group in float32, so an
  ensemble of 8 exhausts ONNX Runtime's memory. The softmax runs over keys, so splitting the
  *queries* into chunks of ``query_chunk`` rows is exact; the export unrolls the chunks (the
  spatial size is static), bounding the matrix to ``(B*E, heads, query_chunk, L)``.
* **float16.** SD 2.1 sets ``upcast_attention``: ``q k^T`` and the softmax in float32, the
  probabilities cast back for ``probs @ v`` (diffusers' classic processor with
  ``upcast_attention=True, upcast_softmax=True``). ``upcast=True`` writes that into the graph.

Only attention over long keys is chunked; cross-attention (77 keys) is small as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["DEFAULT_QUERY_CHUNK", "ExportAttnProcessor", "attention", "set_export_attention"]

#: Query rows per chunk: at SD 2.1's 96x96 level one chunk of logits is
#: ``E * 5 heads * 1024 * 9216 * 4 B`` = 1.5 GB per image for E=8 in float32.
DEFAULT_QUERY_CHUNK = 1024


def attention(query: Tensor, key: Tensor, value: Tensor, scale: float, query_chunk: int | None, upcast: bool) -> Tensor:
    """``softmax(q k^T * scale) v`` over ``(B, H, L, d)`` tensors, chunked along the queries.

    Args:
        query: ``(B, H, Lq, d)``. key, value: ``(B, H, Lk, d)``.
        scale: logit scale (``d ** -0.5``).
        query_chunk: query rows per chunk; ``None``/``0`` computes all at once, and so do
            short sequences (``Lq <= query_chunk``) and short keys (``Lk <= query_chunk``, e.g.
            cross-attention over 77 tokens, whose matrix is small anyway).
        upcast: logits and softmax in float32, probabilities cast back to ``value.dtype``.

    Returns:
        ``(B, H, Lq, d)`` in ``value.dtype``.
    """
    keys_t = (key.float() if upcast else key).transpose(-1, -2)
    length = query.shape[2]
    long_keys = key.shape[2] > (query_chunk or 0)
    step = query_chunk if query_chunk and query_chunk < length and long_keys else length
    outputs = []
    for start in range(0, length, step):  # static length: unrolled at export
        q = query[:, :, start : start + step]
        logits = torch.matmul(q.float() if upcast else q, keys_t) * scale
        probs = F.softmax(logits, dim=-1).to(value.dtype)
        outputs.append(torch.matmul(probs, value))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


class ExportAttnProcessor:
    """A diffusers attention processor that calls :func:`attention`.

    Handles the configurations SD 2.1 uses (UNet transformers; the VAE mid-block with its group
    norm and residual); spatial norms, q/k norms and masks raise :class:`~sd4match_sdk.errors.ConfigError` at the first call.

    Args:
        query_chunk: query rows per chunk (``None``: no chunking).
        upcast: float32 logits and softmax (float16 graphs).
    """

    def __init__(self, query_chunk: int | None = DEFAULT_QUERY_CHUNK, upcast: bool = False) -> None:
        self.query_chunk = query_chunk
        self.upcast = upcast

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        unsupported = [n for n in ("spatial_norm", "norm_q", "norm_k") if getattr(attn, n, None) is not None]
        if unsupported or attention_mask is not None or getattr(attn, "norm_cross", None):
            found = unsupported or "a mask/norm_cross"
            raise ConfigError(f"the exported attention supports SD 2.1's UNet/VAE configurations only (found {found})")
        residual = hidden_states
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.reshape(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:  # the VAE's mid-block attention normalises inside
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, heads = query.shape[0], attn.heads
        head_dim = key.shape[-1] // heads

        def split(x: Tensor) -> Tensor:  # (B, L, H*d) -> (B, H, L, d)
            return x.reshape(batch, -1, heads, head_dim).transpose(1, 2)

        out = attention(split(query), split(key), split(value), attn.scale, self.query_chunk, self.upcast)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def set_export_attention(unet: nn.Module, query_chunk: int | None, upcast: bool) -> int:
    """Give every attention module of ``unet`` an :class:`ExportAttnProcessor`; returns how many."""
    count = 0
    for module in unet.modules():
        if hasattr(module, "set_processor") and hasattr(module, "to_q"):
            module.set_processor(ExportAttnProcessor(query_chunk, upcast))
            count += 1
    return count
