"""DINOv2 patch tokens for the CPM (docs/design.md §4.5, §13.9).

DINOv2 runs on the *original* image with the HF processor's geometry (short side 256 bicubic,
centre crop 224, ImageNet normalisation), giving 16 x 16 = 256 patch tokens; the CLS token is
dropped. ``last_hidden_state`` is post-layernorm, as the official cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["dino_pixels", "dino_patch_tokens", "load_pil_processor"]


def load_pil_processor(source: str | Path) -> Any:
    """DINOv2's image processor from ``source`` (a directory or hub id), PIL backend (docs/design.md §13.9).

    The class is named rather than resolved through ``AutoImageProcessor``: transformers 5.4 to 5.17
    refuse ``AutoImageProcessor`` without torchvision, even for the PIL backend.
    """
    import transformers

    # transformers >= 5.4 splits the PIL backend into its own class; before, the only class is the PIL one.
    processor_class = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor
    return processor_class.from_pretrained(str(source))


def dino_pixels(processor: Any, images: list[np.ndarray]) -> Tensor:
    """Preprocess RGB uint8 images with the DINOv2 processor: ``(B, 3, 224, 224)`` float32."""
    return processor(images=list(images), return_tensors="pt")["pixel_values"]


@torch.no_grad()
def dino_patch_tokens(dino: Any, pixel_values: Tensor) -> Tensor:
    """``(B, 3, 224, 224)`` -> ``(B, 256, D)`` post-layernorm patch tokens (CLS dropped), float32."""
    param = next(dino.parameters())
    out = dino(pixel_values=pixel_values.to(param.device, param.dtype))
    return out.last_hidden_state[:, 1:, :].float()
