"""How many images one device batch may hold: a memory budget over an activation estimate (docs/design.md §13.22).

The peak of a batch is set by the larger of two stages, each linear in its batch:

* the VAE encoder on B images, at full resolution with its first width ``c_vae`` (128 in SD 2.1):
  about ``VAE_UNITS * c_vae * S^2`` elements per image;
* the truncated UNet on the ``B * E`` ensemble batch, at the latent resolution ``S/8`` with its
  first width ``c_unet`` (320): about ``UNET_UNITS * c_unet * (S/8)^2`` elements per member.

Both constants were measured with the SD 2.1 architecture at 384 px on the CPU (peak resident
memory growth of one VAE pass and of a 4-member UNet pass: 5.1 and 32.7) and rounded up.
"""

from __future__ import annotations

import os

import torch

from ..config import FeatureConfig
from ..errors import ConfigError

__all__ = ["UNET_UNITS", "VAE_UNITS", "BatchBudget", "available_memory"]

#: Peak VAE-encoder activations per image, in units of ``c_vae * S * S`` elements.
VAE_UNITS = 6
#: Peak truncated-UNet activations per ensemble member, in units of ``c_unet * (S/8)^2`` elements.
UNET_UNITS = 36
#: The share of the free memory a batch may use when no budget is given.
DEFAULT_SHARE = 0.5


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` now: on CUDA what ``cudaMemGetInfo`` reports free plus what torch's
    caching allocator holds unused (the next batch reuses it: without it, the budget of a warm
    process would shrink after its first large batch); ``MemAvailable`` on Linux CPUs."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached_unused))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class BatchBudget:
    """Images per device batch for a model and a memory budget.

    Args:
        feature_config: image size and ensemble.
        vae_width, unet_width: the first block widths of the VAE encoder and the UNet.
        vae_dtype, unet_dtype: their dtypes.
        device: where the batch runs.
        memory_budget: bytes one batch may use; ``None``: half of the memory free at each call.
    """

    def __init__(
        self,
        feature_config: FeatureConfig,
        vae_width: int,
        unet_width: int,
        vae_dtype: torch.dtype,
        unet_dtype: torch.dtype,
        device: torch.device,
        memory_budget: int | None = None,
    ) -> None:
        if memory_budget is not None and memory_budget <= 0:
            raise ConfigError(f"memory_budget must be a positive number of bytes (got {memory_budget})")
        side = feature_config.image_size
        vae = VAE_UNITS * vae_width * side * side * _itemsize(vae_dtype)
        unet = feature_config.ensemble * UNET_UNITS * unet_width * (side // 8) ** 2 * _itemsize(unet_dtype)
        self.bytes_per_image = max(vae, unet)
        self.device = device
        self.memory_budget = memory_budget

    def images(self) -> int:
        """Images one batch may hold now (at least 1)."""
        budget = self.memory_budget or int(DEFAULT_SHARE * available_memory(self.device))
        return max(1, budget // self.bytes_per_image)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
