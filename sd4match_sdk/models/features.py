"""SD feature extraction (docs/design.md §3): VAE posterior sample, forward-process noise, truncated UNet, ensemble mean.

The extractor is deterministic given its noise: callers draw ``eps_vae`` and ``noise`` (see
:mod:`sd4match_sdk.noise`) so that every backend can be fed the same numbers. Its output is the
*raw* ensemble mean; matching normalises later (docs/design.md §5.1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from .unet import TruncatedUNet

__all__ = ["SDFeatureExtractor", "forward_diffuse", "noise_schedule"]


def noise_schedule(scheduler: Any, timestep: int) -> Tensor:
    """``(T,)`` the scheduler's ``alphas_cumprod`` (``abar_t``), checked to reach ``timestep``.

    Raises:
        ConfigError: the scheduler has no ``alphas_cumprod`` (not a DDPM-family schedule), or it
            has no step ``timestep``.
    """
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ConfigError(
            f"the scheduler ({type(scheduler).__name__}) has no alphas_cumprod; SD4Match noises latents with the "
            "DDPM forward process: use a model whose scheduler/ is a DDPM-family config (SD 2.1 names DDIMScheduler)"
        )
    alphas_cumprod = torch.as_tensor(alphas_cumprod)
    if not 0 <= timestep < alphas_cumprod.shape[0]:
        raise ConfigError(f"timestep {timestep} is outside the scheduler's {alphas_cumprod.shape[0]} steps; pass a timestep below it")
    return alphas_cumprod


def forward_diffuse(latents: Tensor, noise: Tensor, alphas_cumprod: Tensor, timesteps: Tensor) -> Tensor:
    """The forward process ``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` (docs/design.md §3.3, §3.7).

    Always this formula, whatever scheduler class the model names: a scheduler's ``add_noise``
    is specific to its class (``EulerDiscreteScheduler`` adds ``sigma_t * eps`` without scaling
    ``z``). The operations are those of diffusers' ``DDPMScheduler.add_noise`` /
    ``DDIMScheduler.add_noise``, in the same order, so SD 2.1 (DDIM) gets bit-identical numbers.

    Args:
        latents: ``(N, 4, h, w)`` clean latents ``z``.
        noise: ``(N, 4, h, w)`` standard normal ``eps``.
        alphas_cumprod: ``(T,)`` ``abar`` of the schedule.
        timesteps: ``(N,)`` integer timesteps.

    Returns:
        ``(N, 4, h, w)`` noisy latents, in ``latents``' dtype.
    """
    abar = alphas_cumprod.to(device=latents.device).to(dtype=latents.dtype)
    timesteps = timesteps.to(latents.device)
    shape = (-1,) + (1,) * (latents.ndim - 1)
    sqrt_alpha_prod = (abar[timesteps] ** 0.5).flatten().reshape(shape)
    sqrt_one_minus_alpha_prod = ((1 - abar[timesteps]) ** 0.5).flatten().reshape(shape)
    return sqrt_alpha_prod * latents + sqrt_one_minus_alpha_prod * noise


class SDFeatureExtractor(nn.Module):
    """Images + noise + context -> raw ``up_blocks[1]`` features.

    Args:
        vae: ``diffusers.AutoencoderKL`` (only its encoder runs).
        unet: ``diffusers.UNet2DConditionModel``; wrapped in :class:`TruncatedUNet`.
        scheduler: a diffusers scheduler; only its ``alphas_cumprod`` is read (the noising is
            always the forward process, :func:`forward_diffuse`, whatever the class).
        timestep: the fixed diffusion timestep t.

    Raises:
        ConfigError: the scheduler has no ``alphas_cumprod`` or fewer than ``timestep + 1`` steps.
    """

    def __init__(self, vae: Any, unet: Any, scheduler: Any, timestep: int) -> None:
        super().__init__()
        self.vae = vae
        self.unet = TruncatedUNet(unet)
        self.scheduler = scheduler
        self.timestep = int(timestep)
        self.alphas_cumprod = noise_schedule(scheduler, self.timestep)
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
        noisy = forward_diffuse(repeated.float(), noise.reshape(b * e, *noise.shape[2:]).float(), self.alphas_cumprod, timesteps)
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
