"""A float16 UNet that keeps the numerically fragile parts in float32.

SD 2.1 sets ``upcast_attention``: its attention logits overflow float16 (max 65504) in some
layers, so the reference computes ``q k^T`` and the softmax in float32. A graph exported in
float16 loses that unless it is written into the graph, because ONNX Runtime and a strongly
typed TensorRT network follow the graph's types. This module converts the truncated UNet to
float16 weights and then:

* replaces every attention processor by :class:`UpcastAttnProcessor`: ``q k^T * scale`` and the
  softmax in float32, the probabilities cast back to float16 for ``probs @ v`` (exactly what
  diffusers' classic processor does for ``upcast_attention=True, upcast_softmax=True``);
* wraps every ``GroupNorm``/``LayerNorm`` in :class:`Float32Norm`: statistics and affine in
  float32, output cast back to float16 (variances of large activations overflow float16).

Inputs and outputs of the graph stay float32 (the casts are inside), so callers feed the same
tensors to fp16 and fp32 engines.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["UpcastAttnProcessor", "Float32Norm", "to_float16_safe"]


class UpcastAttnProcessor:
    """Attention with float32 logits and softmax, for diffusers ``Attention`` modules.

    Handles the configuration SD 2.1 uses (no spatial/group norm, no q/k norm, no mask); other
    configurations raise :class:`~sd4match_sdk.errors.ConfigError` at the first call.
    """

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
        unsupported = [
            name
            for name in ("spatial_norm", "group_norm", "norm_q", "norm_k")
            if getattr(attn, name, None) is not None
        ]
        if unsupported or attention_mask is not None or getattr(attn, "norm_cross", None):
            raise ConfigError(f"float16 export supports SD 2.1 attention only (found {unsupported or 'a mask/norm_cross'})")
        residual = hidden_states
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.reshape(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, heads = query.shape[0], attn.heads
        head_dim = key.shape[-1] // heads

        def split(x: Tensor) -> Tensor:  # (B, L, H*d) -> (B, H, L, d)
            return x.reshape(batch, -1, heads, head_dim).transpose(1, 2)

        query, key, value = split(query), split(key), split(value)
        logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale  # float32
        probs = F.softmax(logits, dim=-1).to(value.dtype)
        out = torch.matmul(probs, value).transpose(1, 2).reshape(batch, -1, heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class Float32Norm(nn.Module):
    """Run a ``GroupNorm``/``LayerNorm`` in float32 and cast the result back to the input dtype."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.float()).to(x.dtype)


def _wrap_norms(module: nn.Module) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.GroupNorm, nn.LayerNorm)):
            setattr(module, name, Float32Norm(child))
            count += 1
        elif not isinstance(child, Float32Norm):
            count += _wrap_norms(child)
    return count


def to_float16_safe(unet: nn.Module) -> nn.Module:
    """Convert a (truncated) diffusers UNet in place to float16 with float32 attention and norms.

    Args:
        unet: a ``UNet2DConditionModel`` or the SDK's ``TruncatedUNet`` (shares the modules).

    Returns:
        the same module, converted.
    """
    unet.half()
    for module in unet.modules():
        if hasattr(module, "set_processor") and hasattr(module, "to_q"):
            module.set_processor(UpcastAttnProcessor())
    _wrap_norms(unet)
    return unet
