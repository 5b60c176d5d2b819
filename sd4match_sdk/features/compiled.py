"""The compiled path: the VAE encoder and the truncated UNet through ``torch.compile`` (docs/design.md §13.21).

``Matcher.from_pretrained(..., compile=True)`` prepares the two heavy modules once:

1. ``channels_last`` weights (the layout cuDNN and oneDNN convolutions prefer); on the CPU, the
   float32 3x3 convolutions with 320 or more input channels by Winograd's F(4x4, 3x3), 4x fewer
   multiplies (:mod:`sd4match_sdk.models.winograd`, docs/design.md §13.24);
2. fused attention projections; the cross-attention keys and values come in precomputed: once
   for good for a fixed prompt (Single, Class, text), once per image for a CPM pair
   (:mod:`sd4match_sdk.models.attention`), never once per ensemble member;
3. ``torch.compile`` with static shapes (``dynamic=False``: one graph per batch size), with CUDA
   graphs on CUDA (inductor's ``reduce-overhead``, or ``max-autotune``).

The first call of each batch size compiles (tens of seconds to minutes); inductor caches the
generated code on disk (``TORCHINDUCTOR_CACHE_DIR``, default under ``/tmp/torchinductor_$USER``),
so later processes with the same model, shapes and torch reuse it (docs/performance.md).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.attention import ContextKV, context_keys_values, use_fast_attention
from ..models.features import SDFeatureExtractor
from ..models.winograd import DEFAULT_MIN_CHANNELS, use_winograd

__all__ = ["CompileMode", "CompiledStages", "inductor_mode", "resolve_compile_mode", "winograd_threshold"]


class CompileMode(StrEnum):
    """How the PyTorch backend runs its models."""

    #: Eager PyTorch, diffusers' own attention: the reference path.
    OFF = "off"
    #: ``torch.compile`` (inductor), static shapes; CUDA graphs on CUDA.
    DEFAULT = "default"
    #: As ``default`` plus inductor's autotuning of matrix products and convolutions (longer compile).
    MAX_AUTOTUNE = "max-autotune"


def resolve_compile_mode(value: bool | str | CompileMode | None) -> CompileMode:
    """``False``/``None`` -> off, ``True`` -> default, or a :class:`CompileMode` name.

    Raises:
        ConfigError: an unknown mode.
    """
    if value is None or value is False:
        return CompileMode.OFF
    if value is True:
        return CompileMode.DEFAULT
    try:
        return CompileMode(value)
    except ValueError:
        known = ", ".join(m.value for m in CompileMode)
        raise ConfigError(f"unknown compile mode {value!r}; pass True, False or one of: {known}") from None


def inductor_mode(mode: CompileMode, device: torch.device) -> str:
    """The ``torch.compile`` mode: CUDA graphs on CUDA, none on the CPU (inductor has none there)."""
    if mode is CompileMode.MAX_AUTOTUNE:
        return "max-autotune" if device.type == "cuda" else "max-autotune-no-cudagraphs"
    return "reduce-overhead" if device.type == "cuda" else "default"


def winograd_threshold(setting: int | None | Literal["auto"], device: torch.device) -> int | None:
    """The fewest input channels of a convolution run by Winograd, or ``None`` for none.

    ``"auto"``: 320 on the CPU, none on CUDA, where cuDNN chooses its own algorithms (docs/design.md §13.24).

    Raises:
        ConfigError: anything but ``"auto"``, ``None`` or a non-negative int.
    """
    if setting == "auto":
        return DEFAULT_MIN_CHANNELS if device.type == "cpu" else None
    if setting is not None and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 0):
        raise ConfigError(f"winograd_min_channels must be 'auto', None or a channel count >= 0; got {setting!r}")
    return setting


class _VaeLatents(nn.Module):
    """``(pixels, eps_vae) -> latents``: the extractor's posterior sample as a module to compile."""

    def __init__(self, extractor: SDFeatureExtractor) -> None:
        super().__init__()
        self.vae = extractor.vae
        self._encode = extractor.encode_latents  # a bound method, not a submodule

    def forward(self, pixels: Tensor, eps_vae: Tensor) -> Tensor:
        return self._encode(pixels, eps_vae)


class CompiledStages:
    """The extractor's VAE encoder and truncated UNet, prepared for speed and compiled.

    The modules are changed in place (layout, fused projections, attention processors): build it
    on components that only this backend uses.

    Args:
        extractor: the SD feature extractor, already on ``device`` in its dtypes.
        mode: :attr:`CompileMode.DEFAULT` or :attr:`CompileMode.MAX_AUTOTUNE`.
        device: where the modules run.
        winograd_min_channels: the fewest input channels a float32 3x3 convolution needs to run
            by Winograd; ``None`` for none. Default: 320 on the CPU, none on CUDA (cuDNN picks
            its own algorithms there).
    """

    def __init__(
        self,
        extractor: SDFeatureExtractor,
        mode: CompileMode,
        device: torch.device,
        winograd_min_channels: int | None | Literal["auto"] = "auto",
    ) -> None:
        if mode is CompileMode.OFF:
            raise ConfigError("CompiledStages needs a compile mode other than 'off'; use the eager backend instead")
        self.extractor = extractor
        self.mode = mode
        self.device = device
        # 1. channels_last weights; Winograd 3x3 convolutions on the CPU
        extractor.vae.to(memory_format=torch.channels_last)
        extractor.unet.to(memory_format=torch.channels_last)
        min_channels = winograd_threshold(winograd_min_channels, device)
        self.winograd_convolutions = 0
        if min_channels is not None:
            for module in (extractor.vae.encoder, extractor.unet):
                self.winograd_convolutions += use_winograd(module, min_channels)
        # 2. fused projections; context keys/values once per image (or precomputed)
        use_fast_attention(extractor.vae.encoder)
        self.cross_attention = use_fast_attention(extractor.unet)
        # 3. torch.compile, static shapes
        options = dict(mode=inductor_mode(mode, device), dynamic=False)
        self._vae = torch.compile(_VaeLatents(extractor), **options)
        self._unet = torch.compile(extractor.unet, **options)

    def _step(self) -> None:
        """Tell CUDA-graph trees that a new batch starts (the previous outputs were consumed)."""
        mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
        if self.device.type == "cuda" and mark is not None:
            mark()

    def context_kv(self, context: Tensor) -> ContextKV:
        """Keys and values of every cross-attention layer for ``(N, 77, D)`` contexts (eager, once)."""
        return context_keys_values(self.extractor.unet, context.to(self.device))

    def features(self, pixels: Tensor, eps_vae: Tensor, noise: Tensor, context_kv: ContextKV) -> Tensor:
        """Raw ensemble-mean features of B images, as :meth:`SDFeatureExtractor.forward`.

        Every prompt kind reaches the compiled UNet as keys and values (one graph for all): a fixed
        prompt's are computed once for good, a CPM pair's once per call (:meth:`context_kv`).

        Args:
            pixels, eps_vae, noise: the batch (``(B,3,S,S)``, ``(B,4,h,w)``, ``(B,E,4,h,w)``) on the device.
            context_kv: ``(B, heads, 77, d)`` keys and values of every cross-attention layer, one per image.

        Returns:
            ``(B, C, S/16, S/16)`` float32.
        """
        self._step()
        extractor = self.extractor
        latents = self._vae(pixels.contiguous(), eps_vae.contiguous())
        noisy, timesteps = extractor.noised_latents(latents, noise)
        out = self._unet(noisy.to(extractor.unet.dtype), timesteps, None, context_kv)
        return extractor.ensemble_mean(out, noise.shape[0])
