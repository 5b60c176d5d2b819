"""DINOv2 patch tokens for the CPM, computed once per (image, flip) and reused (docs/design.md §4.5).

DINOv2 is frozen, so an image's tokens never change during training; the official code
precomputes them offline (``pre_compute_dino_feature.py``). Here they are computed on first use,
kept in memory and, when a directory is given, written there as one ``.safetensors`` file per
key so that later runs (and resumed runs) skip DINOv2 entirely. A file records the DINOv2 model
it came from and is ignored when that differs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..models.dino import dino_patch_tokens, dino_pixels

__all__ = ["DinoTokenCache", "dino_cache_key"]


def dino_cache_key(image_path: str | os.PathLike, flip: bool) -> str:
    """``<path>|flip=<0|1>``: the tokens of a mirrored image differ, so flip is part of the key."""
    return f"{Path(image_path).as_posix()}|flip={int(bool(flip))}"


class DinoTokenCache:
    """``(256, D)`` DINOv2 patch tokens by (image, flip).

    Args:
        dino: a frozen ``transformers.Dinov2Model``.
        processor: its image processor (short side 256 bicubic, centre crop 224).
        model_id: the DINOv2 id or directory, stored with every cached file.
        directory: where to persist tokens; ``None`` keeps them in memory only.
    """

    def __init__(self, dino: Any, processor: Any, model_id: str, directory: str | os.PathLike | None = None) -> None:
        self.dino = dino
        self.processor = processor
        self.model_id = str(model_id)
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, Tensor] = {}
        self.computed = 0  # DINOv2 forward passes run (for tests and logs)

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")

    def _read(self, key: str) -> Tensor | None:
        if self.directory is None:
            return None
        path = self._file(key)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key or meta.get("model") != self.model_id:
                    return None
                return f.get_tensor("tokens")
        except Exception:  # a truncated or foreign file: recompute
            return None

    def _write(self, key: str, tokens: Tensor) -> None:
        if self.directory is None:
            return
        from safetensors.torch import save_file

        with atomic_path(self._file(key)) as tmp:
            save_file({"tokens": tokens.contiguous()}, str(tmp), metadata={"key": key, "model": self.model_id})

    def get(self, keys: Sequence[str], images: Sequence[np.ndarray]) -> Tensor:
        """Tokens of several images, ``(B, 256, D)`` float32 on the CPU.

        Args:
            keys: :func:`dino_cache_key` of each image.
            images: the images as DINOv2 should see them (already mirrored when flipped),
                ``(H, W, 3)`` uint8 RGB; only decoded when the key is not cached.
        """
        missing = []
        for i, key in enumerate(keys):
            if key not in self.memory:
                tokens = self._read(key)
                if tokens is None:
                    missing.append(i)
                else:
                    self.memory[key] = tokens
        if missing:
            pixels = dino_pixels(self.processor, [images[i] for i in missing])
            tokens = dino_patch_tokens(self.dino, pixels).cpu()
            self.computed += len(missing)
            for j, i in enumerate(missing):
                self.memory[keys[i]] = tokens[j].clone()
                self._write(keys[i], self.memory[keys[i]])
        return torch.stack([self.memory[k] for k in keys])
