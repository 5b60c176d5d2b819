"""The SD UNet truncated after ``up_blocks[1]`` (docs/design.md §3.5, §13.4).

SD4Match reads the output of ``up_blocks[1]`` (after its upsampler): 1280 x 48 x 48 at 768 px.
Nothing after that block changes it, so up-blocks 2-3, ``conv_norm_out`` and ``conv_out`` never
run. This module reuses the diffusers UNet's own submodules and replays its ``forward`` wiring up
to that block, for the configuration SD 2.1 uses (no class, addition or adapter embeddings).
It returns a tensor, so it exports to ONNX as it is.

With :func:`~sd4match_sdk.models.attention.use_fast_attention` installed, the context may be
one per image for a ``B * E`` ensemble batch, or replaced by precomputed cross-attention keys
and values (``context_kv``); the default processors need one context per batch row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["TruncatedUNet", "FEATURE_BLOCK"]

#: Index of the up block whose output is the feature map (the paper's "2nd up block").
FEATURE_BLOCK = 1


class TruncatedUNet(nn.Module):
    """``UNet2DConditionModel`` up to and including ``up_blocks[FEATURE_BLOCK]``.

    Args:
        unet: a loaded ``diffusers.UNet2DConditionModel``; its modules are shared, not copied.
    """

    def __init__(self, unet: Any) -> None:
        super().__init__()
        config = unet.config
        unsupported = {
            "class_embed_type": config.class_embed_type,
            "num_class_embeds": config.num_class_embeds,
            "addition_embed_type": config.addition_embed_type,
            "encoder_hid_dim_type": config.encoder_hid_dim_type,
        }
        used = {k: v for k, v in unsupported.items() if v is not None}
        if used or config.center_input_sample:
            raise ConfigError(f"unsupported UNet configuration for feature extraction: {used}; SD 2.1 uses none")
        if len(unet.up_blocks) <= FEATURE_BLOCK:
            raise ConfigError(f"the UNet has {len(unet.up_blocks)} up blocks; need more than {FEATURE_BLOCK}")
        self.time_proj = unet.time_proj
        self.time_embedding = unet.time_embedding
        self.time_embed_act = unet.time_embed_act
        self.conv_in = unet.conv_in
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block
        self.up_blocks = nn.ModuleList(unet.up_blocks[: FEATURE_BLOCK + 1])
        self.num_upsamplers = unet.num_upsamplers
        self.out_channels = unet.config.block_out_channels[::-1][FEATURE_BLOCK]

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embedding.linear_1.weight.dtype  # not conv_in's: convolutions may be replaced (models/winograd.py)

    def forward(self, sample: Tensor, timestep: Tensor, context: Tensor | None, context_kv: Any = None) -> Tensor:
        """Run the UNet until ``up_blocks[1]``.

        Args:
            sample: ``(B, 4, h, w)`` noisy latents.
            timestep: scalar or ``(B,)`` integer timestep.
            context: ``(B, 77, D)`` cross-attention context (``None`` with ``context_kv``).
            context_kv: precomputed keys and values of every cross-attention layer
                (:data:`~sd4match_sdk.models.attention.ContextKV`); needs the fast attention.

        Returns:
            ``(B, C, H, W)`` output of ``up_blocks[1]`` (``C=1280, H=W=h/2`` for SD 2.1).
        """
        # Sizes not divisible by the total upsampling need explicit upsample sizes (as diffusers).
        factor = 2**self.num_upsamplers
        forward_upsample_size = any(int(d) % factor != 0 for d in sample.shape[-2:])
        timesteps = timestep.reshape(-1).expand(sample.shape[0]) if timestep.numel() == 1 else timestep
        t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        if self.time_embed_act is not None:
            emb = self.time_embed_act(emb)

        # Only the fast attention reads context_kv; without it the blocks get their default kwargs.
        extra = {"cross_attention_kwargs": {"context_kv": context_kv}} if context_kv is not None else {}
        hidden = self.conv_in(sample)
        residuals: tuple[Tensor, ...] = (hidden,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                hidden, res = block(hidden_states=hidden, temb=emb, encoder_hidden_states=context, **extra)
            else:
                hidden, res = block(hidden_states=hidden, temb=emb)
            residuals += res

        if self.mid_block is not None:
            if getattr(self.mid_block, "has_cross_attention", False):
                hidden = self.mid_block(hidden, emb, encoder_hidden_states=context, **extra)
            else:
                hidden = self.mid_block(hidden, emb)

        for block in self.up_blocks:
            res = residuals[-len(block.resnets) :]
            residuals = residuals[: -len(block.resnets)]
            upsample_size = residuals[-1].shape[2:] if forward_upsample_size else None
            if getattr(block, "has_cross_attention", False):
                hidden = block(
                    hidden_states=hidden,
                    temb=emb,
                    res_hidden_states_tuple=res,
                    encoder_hidden_states=context,
                    upsample_size=upsample_size,
                    **extra,
                )
            else:
                hidden = block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size)
        return hidden
