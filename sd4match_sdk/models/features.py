"""SD feature extraction (docs/design.md §3): VAE posterior sample, DDPM noise, truncated UNet, ensemble mean.

The extractor is deterministic given its noise: callers draw ``eps_vae`` and ``noise`` (see
:mod:`sd4match_sdk.noise`) so that every backend can be fed the same numbers. Its output is the
*raw* ensemble mean; matching normalises later (docs/design.md §5.1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from .unet import TruncatedUNet

__all__ = ["SDFeatureExtractor"]


class SDFeatureExtractor(nn.Module):
    """Images + noise + context -> raw ``up_blocks[1]`` features.

    Args:
        vae: ``diffusers.AutoencoderKL`` (only its encoder runs).
        unet: ``diffusers.UNet2DConditionModel``; wrapped in :class:`TruncatedUNet`.
        scheduler: a diffusers scheduler; ``add_noise`` gives
            ``sqrt(abar_t) z + sqrt(1 - abar_t) eps``.
        timestep: the fixed diffusion timestep t.
    """

    def __init__(self, vae: Any, unet: Any, scheduler: Any, timestep: int) -> None:
        super().__init__()
        self.vae = vae
        self.unet = TruncatedUNet(unet)
        self.scheduler = scheduler
        self.timestep = int(timestep)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def out_channels(self) -> int:
        return self.unet.out_channels

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """``(4, S/8, S/8)``: the latent of a ``S x S`` image."""
        side = image_size // self.vae_scale
        return (self.latent_channels, side, side)

    def encode_latents(self, pixels: Tensor, eps_vae: Tensor) -> Tensor:
        """VAE posterior *sample* times the scaling factor: ``(mean + std * eps) * 0.18215``.

        The encoder runs in the VAE's dtype; the sample is formed in float32 (for a float32 VAE
        every cast here is a no-op).

        Args:
            pixels: ``(B, 3, S, S)`` images in ``[-1, 1]``.
            eps_vae: ``(B, 4, S/8, S/8)`` standard normal draws.

        Returns:
            ``(B, 4, S/8, S/8)`` float32 latents.
        """
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        latents = posterior.mean.float() + posterior.std.float() * eps_vae.float()
        return latents * self.scaling_factor

    def noised_latents(self, latents: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """``add_noise`` of every ensemble member: ``(B,4,h,w)``, ``(B,E,4,h,w)`` -> ``(B*E,4,h,w)``
        float32 noisy latents, image-major as the official code, and their ``(B*E,)`` timesteps."""
        b, e = noise.shape[:2]
        repeated = latents.repeat_interleave(e, dim=0)  # (B*E, 4, h, w), image-major as the official code
        timesteps = torch.full((b * e,), self.timestep, dtype=torch.long, device=latents.device)
        noisy = self.scheduler.add_noise(repeated.float(), noise.reshape(b * e, *noise.shape[2:]).float(), timesteps)
        return noisy, timesteps

    @staticmethod
    def ensemble_mean(features: Tensor, batch: int) -> Tensor:
        """``(B*E, C, H, W)`` UNet outputs -> ``(B, C, H, W)`` float32 means over the E members."""
        return features.float().reshape(batch, -1, *features.shape[1:]).mean(dim=1)

    def check_batch(self, latents: Tensor, noise: Tensor, context: Tensor) -> None:
        """Raise :class:`ShapeError` unless latents, noise and contexts describe the same B images."""
        b = noise.shape[0]
        if latents.shape[0] != b or context.shape[0] != b or noise.shape[2:] != latents.shape[1:]:
            raise ShapeError(
                f"inconsistent batch: latents {tuple(latents.shape)}, noise {tuple(noise.shape)}, "
                f"context {tuple(context.shape)}; expected (B,4,h,w), (B,E,4,h,w), (B,L,D)"
            )

    def unet_features(self, latents: Tensor, noise: Tensor, context: Tensor) -> Tensor:
        """Noise each latent E times, run the truncated UNet on all B*E at once, average over E.

        Args:
            latents: ``(B, 4, h, w)`` clean latents.
            noise: ``(B, E, 4, h, w)`` standard normal draws.
            context: ``(B, L, D)`` cross-attention contexts (one per image).

        Returns:
            ``(B, C, h/2, w/2)`` raw ensemble-mean features, float32.
        """
        self.check_batch(latents, noise, context)
        b, e = noise.shape[:2]
        noisy, timesteps = self.noised_latents(latents, noise)
        dtype = self.unet.dtype
        features = self.unet(noisy.to(dtype), timesteps, context.to(dtype).repeat_interleave(e, dim=0))
        return self.ensemble_mean(features, b)

    def forward(self, pixels: Tensor, eps_vae: Tensor, noise: Tensor, context: Tensor) -> Tensor:
        """``(B,3,S,S)`` images, ``(B,4,h,w)`` VAE noise, ``(B,E,4,h,w)`` noise, ``(B,L,D)`` context
        -> ``(B, C, S/16, S/16)`` raw features."""
        return self.unet_features(self.encode_latents(pixels, eps_vae), noise, context)
