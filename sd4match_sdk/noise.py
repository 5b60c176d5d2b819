"""Every random draw of feature extraction, from one generator, in a fixed order (SPEC 13).

For one image: ``eps_vae = randn(1, 4, h, w)`` (the VAE posterior sample), then
``noise = randn(E, 4, h, w)`` (the E diffusion noise maps). For a pair the source image draws
first, then the target. Draws are float32 on the CPU (so a seed gives the same numbers on every
device and backend) and are moved to the device afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ImageNoise", "draw_image_noise", "draw_pair_noise", "make_generator"]


@dataclass(frozen=True)
class ImageNoise:
    """The noise one image consumes.

    Attributes:
        eps_vae: ``(1, 4, h, w)`` standard normal draw for the VAE posterior sample.
        noise: ``(E, 4, h, w)`` diffusion noise maps.
    """

    eps_vae: Tensor
    noise: Tensor


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``, or ``generator`` as given, or ``None`` (global RNG)."""
    if seed is not None and generator is not None:
        from .errors import ConfigError

        raise ConfigError("pass either seed or generator, not both")
    if seed is not None:
        return torch.Generator(device="cpu").manual_seed(int(seed))
    if generator is not None and generator.device.type != "cpu":
        from .errors import ConfigError

        raise ConfigError("the generator must be a CPU torch.Generator (noise is drawn on the CPU, then moved)")
    return generator


def draw_image_noise(
    generator: torch.Generator | None, ensemble: int, latent_shape: tuple[int, int, int]
) -> ImageNoise:
    """Draw ``eps_vae`` then ``noise`` for one image (float32, CPU)."""
    eps_vae = torch.randn((1, *latent_shape), generator=generator, dtype=torch.float32)
    noise = torch.randn((ensemble, *latent_shape), generator=generator, dtype=torch.float32)
    return ImageNoise(eps_vae, noise)


def draw_pair_noise(
    generator: torch.Generator | None, ensemble: int, latent_shape: tuple[int, int, int]
) -> tuple[ImageNoise, ImageNoise]:
    """Draw the source image's noise, then the target's."""
    source = draw_image_noise(generator, ensemble, latent_shape)
    target = draw_image_noise(generator, ensemble, latent_shape)
    return source, target
