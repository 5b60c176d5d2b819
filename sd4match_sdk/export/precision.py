"""A float16 UNet that keeps the numerically fragile parts in float32.

SD 2.1 sets ``upcast_attention``: its attention logits overflow float16 (max 65504) in some
layers, so the reference computes ``q k^T`` and the softmax in float32. A graph exported in
float16 loses that unless it is written into the graph, because ONNX Runtime and a strongly
typed TensorRT network follow the graph's types. :func:`to_float16_safe` converts the truncated
UNet to float16 weights and then

* gives every attention module the export processor with ``upcast=True`` (float32 logits and
  softmax, float16 ``probs @ v``; see ``attention.py``);
* wraps every ``GroupNorm``/``LayerNorm`` in :class:`Float32Norm`: statistics and affine in
  float32, the output cast back to float16 (variances of large activations overflow float16).

Inputs and outputs of the graph stay float32 (the casts are inside), so callers feed the same
tensors to fp16 and fp32 engines.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import DEFAULT_QUERY_CHUNK, set_export_attention

__all__ = ["Float32Norm", "to_float16_safe"]


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


def to_float16_safe(unet: nn.Module, query_chunk: int | None = DEFAULT_QUERY_CHUNK) -> nn.Module:
    """Convert a (truncated) diffusers UNet in place to float16 with float32 attention and norms.

    Args:
        unet: a ``UNet2DConditionModel`` or the SDK's ``TruncatedUNet`` (shares the modules).
        query_chunk: query rows per attention chunk (see ``attention.py``).

    Returns:
        the same module, converted.
    """
    unet.half()
    set_export_attention(unet, query_chunk, upcast=True)
    _wrap_norms(unet)
    return unet
