"""The feature backend over an exported engine directory (ONNX Runtime or TensorRT graphs).

It fulfils the :class:`~sd4match_sdk.backends.base.FeatureBackend` contract with the same
preprocessing as the PyTorch backend (``sd_pixels``, the DINOv2 processor saved in the engine)
and the noise the :class:`~sd4match_sdk.matcher.Matcher` draws, so a seed gives the same
matches on every backend. The graphs run through :class:`GraphRunner` objects, one per graph;
``onnxrt.py`` and ``tensorrt.py`` provide them. Batches larger than the manifest's
``max_batch`` are split into chunks of at most ``max_batch`` images (or pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..config import FeatureConfig
from ..errors import ConfigError, EngineError, UnknownCategoryError
from ..export.config import DINO_PROCESSOR_DIR, ContextMode, GraphName
from ..export.manifest import EngineManifest
from ..images import sd_pixels
from ..models.dino import dino_pixels
from ..noise import ImageNoise
from ..prompts import PromptKind

__all__ = ["ENGINE_RUNTIMES", "EngineFeatureBackend", "GraphRunner", "load_dino_processor", "open_engine_backend"]

#: Engine runtimes ``Matcher.from_pretrained(DIR, engine_runtime=...)`` accepts.
ENGINE_RUNTIMES = ("auto", "onnxruntime", "tensorrt")


class GraphRunner(Protocol):
    """Runs one graph: named tensors in (moved to the runner's device), named tensors out (on it)."""

    def run(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]: ...


def load_dino_processor(engine_dir: Path) -> Any:
    """The DINOv2 image processor saved with a CPM engine (PIL backend, as the PyTorch path)."""
    from transformers import AutoImageProcessor

    path = Path(engine_dir) / DINO_PROCESSOR_DIR
    if not path.is_dir():
        raise EngineError(
            f"CPM engine {str(engine_dir)!r} lacks {DINO_PROCESSOR_DIR}/; re-export it with sd4match-export"
        )
    return AutoImageProcessor.from_pretrained(str(path), backend="pil")


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


class EngineFeatureBackend:
    """Images + noise -> raw features through an engine's graphs.

    Args:
        engine_dir: the engine directory.
        manifest: its (checked) manifest.
        runners: ``{graph name: runner}`` for ``vae_encoder``, ``unet`` (and ``prompt_net``).
        name: backend name (``"onnxruntime"``, ``"tensorrt"``).
        dino_processor: the DINOv2 image processor (CPM engines).
    """

    def __init__(
        self,
        engine_dir: str | Path,
        manifest: EngineManifest,
        runners: dict[str, GraphRunner],
        name: str,
        dino_processor: Any = None,
    ) -> None:
        self.engine_dir = Path(engine_dir)
        self.manifest = manifest
        self.runners = runners
        self.name = name
        self.feature_config = FeatureConfig(manifest.image_size, manifest.timestep, manifest.ensemble)
        try:
            self.prompt_kind = PromptKind(manifest.prompt_kind)
            self.context_mode = ContextMode(manifest.context_mode)
        except ValueError as err:
            raise EngineError(f"engine manifest: {err}; re-export the engine with this SDK") from None
        if self.context_mode is ContextMode.INPUT and dino_processor is None:
            raise EngineError("CPM engine without its DINOv2 image processor")
        self.dino_processor = dino_processor
        self._index = {c: i for i, c in enumerate(manifest.categories)}

    @property
    def categories(self) -> list[str]:
        return list(self.manifest.categories) if self.prompt_kind is PromptKind.CLASS else []

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest.latent_shape)  # type: ignore[return-value]

    def check_category(self, category: str | None) -> None:
        if self.context_mode is not ContextMode.TABLE or category in self._index:
            return
        if category is None and self.prompt_kind is not PromptKind.CLASS:
            raise ConfigError(
                f"this engine's text prompt is filled per category: pass category=... (one of: {', '.join(self.manifest.categories)})"
            )
        raise UnknownCategoryError(category, self.manifest.categories)

    # ------------------------------------------------------------------ graphs

    def _run_chunked(self, graph: str, feeds: dict[str, Tensor], outputs: list[str]) -> list[Tensor]:
        """Run ``graph`` over the leading axis of ``feeds`` in chunks of ``max_batch``."""
        total = next(iter(feeds.values())).shape[0]
        parts: list[list[Tensor]] = [[] for _ in outputs]
        for chunk in _chunks(total, self.manifest.max_batch):
            result = self.runners[graph].run({k: v[chunk].contiguous() for k, v in feeds.items()})
            for i, name in enumerate(outputs):
                parts[i].append(result[name])
        return [torch.cat(p) for p in parts]

    def _contexts_feed(self, categories: list[str | None], pair_contexts: Tensor | None) -> dict[str, Tensor]:
        if self.context_mode is ContextMode.TABLE:
            return {"class_index": torch.tensor([self._index[c] for c in categories], dtype=torch.long)}  # type: ignore[index]
        if self.context_mode is ContextMode.INPUT:
            return {"context": pair_contexts}  # type: ignore[dict-item]
        return {}

    def _features(self, images: list[np.ndarray], noises: list[ImageNoise], context_feed: dict[str, Tensor]) -> Tensor:
        size = self.feature_config.image_size
        pixels = torch.cat([sd_pixels(img, size) for img in images])
        eps_vae = torch.cat([n.eps_vae for n in noises]).float()
        (latents,) = self._run_chunked(GraphName.VAE_ENCODER, {"pixels": pixels, "eps_vae": eps_vae}, ["latents"])
        noise = torch.stack([n.noise for n in noises]).float()
        feeds = {"latents": latents, "noise": noise, **context_feed}  # runners move inputs to their device
        (features,) = self._run_chunked(GraphName.UNET, feeds, ["features"])
        return features.float()

    def pair_contexts(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> Tensor:
        """``(P, 77, D)`` CPM contexts of P pairs from the prompt network."""
        pixels = dino_pixels(self.dino_processor, sources + targets).float()
        p = len(sources)
        (context,) = self._run_chunked(
            GraphName.PROMPT_NET, {"dino_source": pixels[:p], "dino_target": pixels[p:]}, ["context"]
        )
        return context

    # ------------------------------------------------------------------ FeatureBackend

    def extract_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
    ) -> Tensor:
        images = [img for pair in zip(sources, targets) for img in pair]
        flat_noises = [n for pair in noises for n in pair]
        flat_categories = [c for c in categories for _ in range(2)]
        contexts = (
            self.pair_contexts(sources, targets).repeat_interleave(2, dim=0)
            if self.context_mode is ContextMode.INPUT
            else None
        )
        return self._features(images, flat_noises, self._contexts_feed(flat_categories, contexts))

    def extract_images(
        self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]
    ) -> Tensor:
        if self.context_mode is ContextMode.INPUT:
            raise ConfigError("CPM features depend on both images of a pair; use match() or match_batch()")
        return self._features(images, noises, self._contexts_feed(categories, None))


def open_engine_backend(engine_dir: str | Path, device: torch.device, runtime: str = "auto") -> EngineFeatureBackend:
    """Open an engine directory with ONNX Runtime or TensorRT.

    Args:
        engine_dir: a directory written by ``sd4match-export``.
        device: ``cuda`` runs ONNX Runtime's CUDA provider (when installed) or TensorRT; ``cpu``
            runs ONNX Runtime on the CPU.
        runtime: ``"auto"`` (TensorRT when the directory holds plans, else ONNX Runtime),
            ``"onnxruntime"`` or ``"tensorrt"``.

    Raises:
        ConfigError: unknown runtime. EngineError: bad manifest, files that differ from it, plans
        for another GPU/TensorRT. BackendUnavailableError: the runtime is not installed.
    """
    from ..export.manifest import read_manifest

    if runtime not in ENGINE_RUNTIMES:
        raise ConfigError(f"unknown engine_runtime {runtime!r}; choose one of: {', '.join(ENGINE_RUNTIMES)}")
    manifest = read_manifest(engine_dir)
    has_plans = all(g.plan for g in manifest.graphs.values())
    if runtime == "auto":
        runtime = "tensorrt" if has_plans else "onnxruntime"
    if runtime == "tensorrt":
        if not has_plans:
            raise ConfigError(
                f"{str(engine_dir)!r} holds no TensorRT plans; build them with sd4match-export --engine trt, "
                "or use engine_runtime='onnxruntime'"
            )
        from .tensorrt import open_tensorrt_backend

        return open_tensorrt_backend(engine_dir, manifest, device)
    from .onnxrt import open_onnxruntime_backend

    return open_onnxruntime_backend(engine_dir, manifest, device)
