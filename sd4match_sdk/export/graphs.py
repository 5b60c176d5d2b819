"""Export-shaped modules: tensors in, a tuple of tensors out, no Python branching on data.

Each module wraps the SDK's own PyTorch pieces (the oracle) without copying their math:

* :class:`VaeEncoderGraph` -- ``SDFeatureExtractor.encode_latents``: the VAE posterior sample
  ``(mean + std * eps_vae) * scaling_factor`` with the posterior noise as an input.
* ``*ContextUNetGraph`` -- ``SDFeatureExtractor.unet_features``: ``add_noise`` at the baked
  timestep, the UNet truncated after ``up_blocks[1]`` on the ``B * E`` ensemble batch, the mean
  over the ensemble; plus the per-cell L2-normalised map as a second output. The context is
  baked (fixed or a table picked by a class index) or an input (CPM).
* :class:`PromptNetworkGraph` -- DINOv2 patch tokens of both images -> CPM -> ``[SOS | 75 | EOS]``
  -> CLIP text encoder: the CPM context of a pair (``PromptContexts.pair``).

Why two feature outputs: matching samples the query descriptor from the **raw** ensemble-mean
map and normalises *after* sampling (docs/design.md §5.1); sampling the normalised
map gives different matches at off-grid points. ``features`` is that raw map, used by the SDK's
matching. ``features_normalized`` (``x / (||x|| + 1e-6)`` per cell) is the target side of the
cosine map, ready for dense matching, and is what grid-aligned queries can read directly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.cpm import ConditionalPromptModule, assemble_prompt
from ..models.features import SDFeatureExtractor
from ..models.text import encode_token_embeddings
from ..ops.matching import l2_normalize

__all__ = [
    "FixedContextUNetGraph",
    "InputContextUNetGraph",
    "PromptNetworkGraph",
    "TableContextUNetGraph",
    "VaeEncoderGraph",
]


class VaeEncoderGraph(nn.Module):
    """``(pixels (B,3,S,S) in [-1,1], eps_vae (B,4,S/8,S/8)) -> (latents (B,4,S/8,S/8),)``.

    Args:
        extractor: the SDK feature extractor; only its VAE is registered (and exported).
    """

    def __init__(self, extractor: SDFeatureExtractor) -> None:
        super().__init__()
        self.vae = extractor.vae
        self._encode = extractor.encode_latents  # a bound method, not a submodule

    def forward(self, pixels: Tensor, eps_vae: Tensor) -> tuple[Tensor]:
        return (self._encode(pixels, eps_vae).float(),)


class _UNetGraph(nn.Module):
    """Shared part of the UNet graphs: registers only the truncated UNet."""

    def __init__(self, extractor: SDFeatureExtractor) -> None:
        super().__init__()
        self.unet = extractor.unet
        self._features = extractor.unet_features

    def _outputs(self, latents: Tensor, noise: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        raw = self._features(latents, noise, context)  # (B, C, h, w) float32 ensemble mean
        return raw, l2_normalize(raw, dim=1)


class FixedContextUNetGraph(_UNetGraph):
    """``(latents (B,4,h,w), noise (B,E,4,h,w)) -> (features, features_normalized)``, one baked context.

    Args:
        extractor: the SDK feature extractor.
        context: ``(1, 77, D)`` the prompt's cross-attention context.
    """

    def __init__(self, extractor: SDFeatureExtractor, context: Tensor) -> None:
        super().__init__(extractor)
        self.register_buffer("context", context.detach().float().clone())

    def forward(self, latents: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        context = self.context.expand(latents.shape[0], -1, -1)
        return self._outputs(latents, noise, context)


class TableContextUNetGraph(_UNetGraph):
    """``(latents, noise, class_index (B,) int64) -> (features, features_normalized)``.

    Args:
        extractor: the SDK feature extractor.
        table: ``(K, 77, D)`` one context per category, in the manifest's category order.
    """

    def __init__(self, extractor: SDFeatureExtractor, table: Tensor) -> None:
        super().__init__(extractor)
        self.register_buffer("table", table.detach().float().clone())

    def forward(self, latents: Tensor, noise: Tensor, class_index: Tensor) -> tuple[Tensor, Tensor]:
        return self._outputs(latents, noise, self.table[class_index])


class InputContextUNetGraph(_UNetGraph):
    """``(latents, noise, context (B,77,D)) -> (features, features_normalized)`` (CPM)."""

    def forward(self, latents: Tensor, noise: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return self._outputs(latents, noise, context)


class PromptNetworkGraph(nn.Module):
    """``(dino_source (P,3,224,224), dino_target (P,3,224,224)) -> (context (P,77,D),)``.

    DINOv2 runs on both images of every pair in one batch (sources first, as the PyTorch
    backend), the CPM turns the two token sets into the 75 learned tokens, SOS/EOS frame them and
    the frozen CLIP text encoder makes the context shared by both images of the pair.

    Args:
        dino: a ``transformers.Dinov2Model``.
        cpm: the Conditional Prompting Module.
        text_encoder: the SD ``CLIPTextModel``.
        sos, eos: ``(1, 1, D)`` SOS+pos0 and EOS+pos76 embeddings.
    """

    def __init__(
        self, dino: nn.Module, cpm: ConditionalPromptModule, text_encoder: nn.Module, sos: Tensor, eos: Tensor
    ) -> None:
        super().__init__()
        self.dino = dino
        self.cpm = cpm
        self.text_encoder = text_encoder
        self.register_buffer("sos", sos.detach().clone())
        self.register_buffer("eos", eos.detach().clone())

    def forward(self, dino_source: Tensor, dino_target: Tensor) -> tuple[Tensor]:
        pairs = dino_source.shape[0]
        pixels = torch.cat([dino_source, dino_target], dim=0)  # (2P, 3, 224, 224)
        tokens = self.dino(pixel_values=pixels).last_hidden_state[:, 1:, :].float()  # CLS dropped
        learned = self.cpm(tokens[:pairs], tokens[pairs:])
        return (encode_token_embeddings(self.text_encoder, assemble_prompt(learned, self.sos, self.eos)).float(),)
