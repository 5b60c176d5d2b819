"""DINOv2 patch tokens for the CPM, computed once per (image, flip) before training and shared (docs/design.md §4.5, §8.8).

DINOv2 is frozen, so an image's tokens never change during training; the official code
precomputes them offline (``pre_compute_dino_feature.py``). :meth:`DinoTokenCache.fill` does the
same before the first step: the images of the training split are dealt to the processes, each
computes (or reads) its share, one image per DINOv2 call, so a token does not depend on which
process or batch computed it, and the shares are exchanged so that every process holds every
token. With a directory, rank 0 writes one ``.safetensors`` file per key there so that later (and
resumed) runs skip DINOv2 entirely; a file records the DINOv2 model it came from and is ignored
when that differs.
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
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..data.base import read_rgb
from ..distributed import Distributed
from ..errors import ConfigError
from ..models.dino import dino_patch_tokens, dino_pixels

__all__ = ["DinoTokenCache", "dino_cache_key"]

#: Images per process between two exchanges of :meth:`DinoTokenCache.fill`.
FILL_CHUNK = 16


def dino_cache_key(image_path: str | os.PathLike, flip: bool) -> str:
    """``<path>|flip=<0|1>``: the tokens of a mirrored image differ, so flip is part of the key."""
    return f"{Path(image_path).as_posix()}|flip={int(bool(flip))}"


def _oriented(path: str | os.PathLike, flip: bool) -> np.ndarray:
    image = read_rgb(Path(path))
    return np.ascontiguousarray(image[:, ::-1]) if flip else image


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
        self.computed = 0  # DINOv2 forward passes run by this process (for tests and logs)

    def _file(self, key: str) -> Path:
        if self.directory is None:
            raise ConfigError("this DINOv2 token cache keeps its tokens in memory (no directory)")
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".safetensors")

    def _read(self, key: str) -> Tensor | None:
        if self.directory is None or not self._file(key).is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self._file(key)), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key or meta.get("model") != self.model_id:
                    return None
                return f.get_tensor("tokens")
        except Exception:  # a truncated or foreign file: recompute
            return None

    def _write(self, key: str, tokens: Tensor) -> None:
        if self.directory is None or self._read(key) is not None:
            return
        from safetensors.torch import save_file

        with atomic_path(self._file(key)) as tmp:
            save_file({"tokens": tokens.contiguous()}, str(tmp), metadata={"key": key, "model": self.model_id})

    def tokens_of(self, key: str, path: str | os.PathLike, flip: bool) -> Tensor:
        """One image's tokens: from memory, from the directory, or computed (alone) from its file."""
        if key in self.memory:
            return self.memory[key]
        tokens = self._read(key)
        if tokens is None:
            tokens = dino_patch_tokens(self.dino, dino_pixels(self.processor, [_oriented(path, flip)]))[0].cpu()
            self.computed += 1
        return tokens

    def fill(self, images: Sequence[tuple[str, str | os.PathLike, bool]], distributed: Distributed | None = None,
             device: torch.device | None = None, progress: bool = False) -> None:  # fmt: skip
        """Hold the tokens of every ``(key, image path, flip)`` in memory on every process.

        Keys are sorted and dealt to the processes in chunks of :data:`FILL_CHUNK`; each process
        reads or computes its chunk, the chunks are exchanged, and rank 0 writes the new ones to
        the directory. Every process must call it with the same images.
        """
        distributed = distributed or Distributed()
        device = device or torch.device("cpu")
        entries = sorted({key: (key, path, flip) for key, path, flip in images}.values())
        chunks = [entries[i : i + FILL_CHUNK] for i in range(0, len(entries), FILL_CHUNK)]
        bar = tqdm(total=len(entries), desc="DINOv2 tokens", unit="img", disable=not (progress and distributed.is_main))
        with bar:
            for start in range(0, len(chunks), distributed.world_size):
                mine = chunks[start + distributed.rank] if start + distributed.rank < len(chunks) else []
                exchanged = distributed.exchange(lambda: self._chunk(mine, device), "computing the DINOv2 tokens", device)
                for offset, (tokens, _) in enumerate(exchanged):
                    if tokens is None:
                        continue
                    for (key, _, _), row in zip(chunks[start + offset], tokens.cpu()):
                        self.memory[key] = row.clone()
                        if distributed.is_main:
                            self._write(key, self.memory[key])
                    bar.update(len(tokens))

    def _chunk(self, entries: list[tuple[str, Any, bool]], device: torch.device) -> tuple[Tensor | None, None]:
        if not entries:
            return None, None
        return torch.stack([self.tokens_of(*entry) for entry in entries]).to(device), None

    def get(self, keys: Sequence[str]) -> Tensor:
        """``(B, 256, D)`` float32 tokens on the CPU of keys filled by :meth:`fill`.

        Raises:
            ConfigError: a key was never filled.
        """
        missing = [key for key in keys if key not in self.memory]
        if missing:
            raise ConfigError(f"no DINOv2 tokens for {missing[0]!r}: fill the cache with every training image first")
        return torch.stack([self.memory[key] for key in keys])
