"""One image's raw features, reusable across pairs, and their ``.safetensors`` file.

The file (``sd4match features IMAGES --out DIR`` writes one per image): a tensor ``features``
``(1, C, h, w)`` float32, the raw ensemble mean (docs/design.md §13.1), and a metadata header
``format = sd4match-features``, ``format_version = 1``, ``size`` (``[W, H]`` of the original
image), ``category``, and what the writer adds (model, prompt, timestep, ensemble, image size,
seed, ...). Written atomically; :meth:`ImageFeatures.load` gives back what
:meth:`~sd4match_sdk.Matcher.match_features` takes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from .._version import __version__
from ..atomic import atomic_path
from ..errors import ConfigError

__all__ = ["FEATURES_FORMAT", "ImageFeatures"]

FEATURES_FORMAT = "sd4match-features"
_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class ImageFeatures:
    """Raw SD features of one image, reusable across many pairs (single/class/text prompts).

    Attributes:
        features: ``(1, C, h, w)`` raw ensemble-mean feature map (not normalised), float32.
        size: ``(W, H)`` of the original image.
        category: the category its prompt was built for (class prompts), else ``None``.
        metadata: how they were computed, as strings (read from a file, or added by the writer).
    """

    features: Tensor
    size: tuple[int, int]
    category: str | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Write the features and their metadata (``self.metadata`` plus ``metadata``, as strings)
        to a ``.safetensors`` file, atomically (temporary file, then rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        header = {k: str(v) for k, v in {**self.metadata, **metadata}.items() if v is not None}
        header.update(format=FEATURES_FORMAT, format_version=_FORMAT_VERSION, size=json.dumps(list(self.size)),
                      category=self.category or "", sdk_version=__version__)  # fmt: skip
        with atomic_path(path) as tmp:
            save_file({"features": self.features.detach().float().cpu().contiguous()}, str(tmp), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageFeatures:
        """Read a features file written by :meth:`save` (``sd4match features``).

        Raises:
            ConfigError: not such a file (naming what it is instead).
        """
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ConfigError(f"cannot read {str(path)!r} as a features file ({err}); write one with sd4match features") from None
        if meta.get("format") != FEATURES_FORMAT or "features" not in tensors:
            raise ConfigError(
                f"{str(path)!r} is not an sd4match features file (format={meta.get('format')!r}); "
                "write one with `sd4match features IMAGES --out DIR` or ImageFeatures.save"
            )
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ConfigError(f"{str(path)!r} has features format version {meta.get('format_version')!r}; this SDK "
                              f"reads version {_FORMAT_VERSION}: upgrade the SDK")  # fmt: skip
        width, height = json.loads(meta["size"])
        return cls(tensors["features"].float(), (int(width), int(height)), meta.get("category") or None, meta)
