"""Every random draw of feature extraction, from one generator, in a fixed order (docs/design.md §7.2).

For one image: ``eps_vae = randn(1, 4, h, w)`` (the VAE posterior sample), then
``noise = randn(E, 4, h, w)`` (the E diffusion noise maps). For a pair the source image draws
first, then the target. Draws are float32 on the CPU (so a seed gives the same numbers on every
device and backend) and are moved to the device afterwards.

A pair's noise can be saved as ``.npy`` files (:func:`save_pair_noise`, layout in
:data:`NOISE_FILES`) for programs without torch, e.g. the C++ example (docs/cpp.md), to
reproduce a Python match exactly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checks import check_seed
from .errors import ConfigError

__all__ = [
    "NOISE_FILES",
    "ImageNoise",
    "derive_seed",
    "draw_image_noise",
    "draw_pair_noise",
    "load_pair_noise",
    "make_generator",
    "save_pair_noise",
]

#: A noise directory: one little-endian float32 C-order ``.npy`` file per draw, in drawing order:
#: the source's ``eps_vae (1, 4, h, w)`` and ``noise (E, 4, h, w)``, then the target's.
NOISE_FILES = ("eps_vae_source.npy", "noise_source.npy", "eps_vae_target.npy", "noise_target.npy")


@dataclass(frozen=True)
class ImageNoise:
    """The noise one image consumes.

    Attributes:
        eps_vae: ``(1, 4, h, w)`` standard normal draw for the VAE posterior sample.
        noise: ``(E, 4, h, w)`` diffusion noise maps.
    """

    eps_vae: Tensor
    noise: Tensor


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and labels, stable across runs and platforms (sha256).

    Raises:
        ConfigError: ``seed`` is not an integer in the generator's range.
    """
    text = "|".join([str(check_seed(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``, or ``generator`` as given, or ``None`` (global RNG)."""
    if seed is not None and generator is not None:
        raise ConfigError("pass either seed or generator, not both")
    if seed is not None:
        return torch.Generator(device="cpu").manual_seed(check_seed(seed))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a CPU torch.Generator (got {type(generator).__name__}); or pass seed=...")
    if generator is not None and generator.device.type != "cpu":
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


def save_pair_noise(directory: str | os.PathLike, source: ImageNoise, target: ImageNoise) -> list[Path]:
    """Write a pair's noise as the four ``.npy`` files of :data:`NOISE_FILES` (float32, C order).

    ``Matcher.match(a, b, points, seed=s)`` draws ``draw_pair_noise(make_generator(s), E, latent)``;
    saving that and feeding the files to an engine reproduces the match exactly.

    Returns:
        The paths written, in :data:`NOISE_FILES` order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, tensor in zip(NOISE_FILES, (source.eps_vae, source.noise, target.eps_vae, target.noise)):
        path = directory / name
        np.save(path, np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype="<f4"))
        paths.append(path)
    return paths


def load_pair_noise(directory: str | os.PathLike) -> tuple[ImageNoise, ImageNoise]:
    """Read a noise directory written by :func:`save_pair_noise`: ``(source, target)``.

    Raises:
        ConfigError: a file is missing or not float32.
    """
    arrays = []
    for name in NOISE_FILES:
        path = Path(directory) / name
        if not path.is_file():
            raise ConfigError(f"noise file {str(path)!r} not found; write the directory with save_pair_noise")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ConfigError(f"noise file {str(path)!r} is not a .npy array ({err}); write the directory with save_pair_noise") from None
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            raise ConfigError(f"noise file {str(path)!r} holds {getattr(array, 'dtype', type(array).__name__)}, expected float32; write it with save_pair_noise")
        arrays.append(torch.from_numpy(np.ascontiguousarray(array)))
    return ImageNoise(arrays[0], arrays[1]), ImageNoise(arrays[2], arrays[3])
