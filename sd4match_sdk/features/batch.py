"""The one batch assembly every feature path uses: images + noise -> the tensors the models take.

A batch of B images is ``pixels (B, 3, S, S)`` in ``[-1, 1]``, ``eps_vae (B, 4, h, w)`` (the VAE
posterior draw) and ``noise (B, E, 4, h, w)`` (the ensemble's diffusion noise), plus each
image's category. Pairs are laid out image-major and interleaved, ``[source0, target0,
source1, target1, ...]``, so a per-pair value (a CPM context, a category) becomes per-image
with :func:`per_image`. The PyTorch backend, the engine runtime and the trainer all build their
inputs here; only what they run on the batch differs.

A :class:`PreparedBatch` is that batch plus the CPM's DINOv2 pixels, made on the host (decode,
resize, noise, pinned memory) while the device runs the previous batch (docs/design.md §13.22).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeError
from ..images import sd_pixels
from ..noise import ImageNoise

__all__ = ["ImageBatch", "PreparedBatch", "interleave_pairs", "per_image"]


def interleave_pairs(sources: Sequence, targets: Sequence) -> list:
    """``[s0, s1], [t0, t1]`` -> ``[s0, t0, s1, t1]``: the image order of a pair batch."""
    if len(sources) != len(targets):
        raise ShapeError(f"{len(sources)} sources but {len(targets)} targets")
    return [item for pair in zip(sources, targets) for item in pair]


def per_image(pair_values: Tensor) -> Tensor:
    """``(P, ...)`` one value per pair -> ``(2P, ...)`` one per image (source, then target)."""
    return pair_values.repeat_interleave(2, dim=0)


@dataclass(frozen=True)
class ImageBatch:
    """B images and the noise they consume, as the feature extractor takes them.

    Attributes:
        pixels: ``(B, 3, S, S)`` float32 in ``[-1, 1]``.
        eps_vae: ``(B, 4, h, w)`` float32 standard normal draws for the VAE posterior sample.
        noise: ``(B, E, 4, h, w)`` float32 diffusion noise, E maps per image.
        categories: B categories (``None`` where the prompt needs none).
    """

    pixels: Tensor
    eps_vae: Tensor
    noise: Tensor
    categories: tuple[str | None, ...]

    def __post_init__(self) -> None:
        sizes = {len(self.pixels), len(self.eps_vae), len(self.noise), len(self.categories)}
        if len(sizes) != 1:
            raise ShapeError(
                f"inconsistent image batch: pixels {tuple(self.pixels.shape)}, eps_vae {tuple(self.eps_vae.shape)}, "
                f"noise {tuple(self.noise.shape)}, {len(self.categories)} categories"
            )

    def __len__(self) -> int:
        return len(self.categories)

    @classmethod
    def from_pixels(
        cls, pixels: Tensor, noises: Sequence[ImageNoise], categories: Sequence[str | None] | None = None
    ) -> ImageBatch:
        """A batch of already prepared ``(B, 3, S, S)`` pixels and one :class:`ImageNoise` per image."""
        eps_vae = torch.cat([n.eps_vae for n in noises]) if noises else pixels.new_zeros((0, 4, 1, 1))
        noise = torch.stack([n.noise for n in noises]) if noises else pixels.new_zeros((0, 1, 4, 1, 1))
        return cls(pixels, eps_vae, noise, tuple(categories) if categories is not None else (None,) * len(noises))

    @classmethod
    def from_images(
        cls, images: Sequence[np.ndarray], noises: Sequence[ImageNoise], size: int, categories: Sequence[str | None]
    ) -> ImageBatch:
        """``(H, W, 3)`` uint8 RGB images, resized to the ``size x size`` frame (:func:`~sd4match_sdk.images.sd_pixels`)."""
        return cls.from_pixels(torch.cat([sd_pixels(img, size) for img in images]), noises, categories)

    @classmethod
    def from_pairs(
        cls,
        sources: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        noises: Sequence[tuple[ImageNoise, ImageNoise]],
        size: int,
        categories: Sequence[str | None],
    ) -> ImageBatch:
        """P pairs as 2P images ``[source0, target0, ...]``; each pair's category applies to both."""
        images = interleave_pairs(sources, targets)
        flat_noises = [n for pair in noises for n in pair]
        return cls.from_images(images, flat_noises, size, interleave_pairs(categories, categories))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        """The batch on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return ImageBatch(move(self.pixels), move(self.eps_vae), move(self.noise), self.categories)

    def pin_memory(self) -> ImageBatch:
        """The batch in page-locked host memory, so that ``to(cuda, non_blocking=True)`` is asynchronous."""
        return ImageBatch(self.pixels.pin_memory(), self.eps_vae.pin_memory(), self.noise.pin_memory(), self.categories)

    def select(self, index: Sequence[int] | slice) -> ImageBatch:
        """The images at ``index`` (a slice or a list of positions), in that order."""
        if isinstance(index, slice):
            rows: list[int] = list(range(len(self)))[index]
        else:
            rows = list(index)
        picked = torch.as_tensor(rows, dtype=torch.long)
        return ImageBatch(
            self.pixels[picked], self.eps_vae[picked], self.noise[picked], tuple(self.categories[i] for i in rows)
        )


@dataclass(frozen=True)
class PreparedBatch:
    """A batch prepared on the host for one device run.

    Attributes:
        images: the images and their noise (pairs interleaved ``[s0, t0, s1, t1, ...]`` when ``pairs``).
        pairs: whether ``images`` holds pairs (a CPM context is built per pair).
        dino_pixels: CPM prompts: ``(2P, 3, 224, 224)`` DINOv2 inputs, all sources then all targets.
        dino_tokens: CPM prompts, instead of ``dino_pixels`` when the caller has them already (the
            evaluation runner's per-image cache): the sources' and the targets' ``(P, 256, D)`` tokens.
    """

    images: ImageBatch
    pairs: bool
    dino_pixels: Tensor | None = None
    dino_tokens: tuple[Tensor, Tensor] | None = None

    def pin_memory(self) -> PreparedBatch:
        """The images and DINOv2 pixels in page-locked host memory (for asynchronous copies to a
        CUDA device); tokens stay where they were computed."""
        dino = self.dino_pixels.pin_memory() if self.dino_pixels is not None else None
        return PreparedBatch(self.images.pin_memory(), self.pairs, dino, self.dino_tokens)
