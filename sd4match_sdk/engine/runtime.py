"""Running an engine directory: the feature backend over its graphs, on ONNX Runtime or TensorRT.

:func:`open_engine` reads and checks the manifest, picks the runtime from a table
(:data:`RUNNERS`: ONNX Runtime, TensorRT), which verifies the files it will load and opens one
runner per graph, and wraps them in an :class:`EngineFeatureBackend`. That backend fulfils the
:class:`~sd4match_sdk.features.base.FeatureBackend` contract with the same batch assembly as the
PyTorch backend (:mod:`sd4match_sdk.features.batch`), the DINOv2 processor saved in the engine
and the noise the :class:`~sd4match_sdk.matcher.Matcher` draws, so a seed gives the same matches
on every backend. Batches larger than the manifest's ``max_batch`` are split into chunks of at
most ``max_batch`` images (or pairs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int
from ..config import FeatureConfig
from ..errors import ConfigError, EngineError, UnknownCategoryError
from ..features.batch import ImageBatch, PreparedBatch, per_image
from ..features.budget import BatchBudget
from ..models.dino import dino_pixels, load_pil_processor
from ..noise import ImageNoise
from ..prompts import PromptKind
from .directory import read_manifest, verify_files
from .format import DINO_PROCESSOR_DIR, ContextMode, EngineRuntime, GraphName, Precision
from .manifest import EngineManifest
from .onnxrt import onnxruntime_runners
from .tensorrt import tensorrt_runners

__all__ = [
    "RUNNERS",
    "EngineFeatureBackend",
    "GraphRunner",
    "check_requested_settings",
    "load_dino_processor",
    "open_engine",
    "resolve_runtime",
]


class GraphRunner(Protocol):
    """Runs one graph: named tensors in (moved to the runner's device), named tensors out (on it)."""

    #: Where the graph runs: the CPU when CUDA was asked for but the runtime has no CUDA provider.
    device: torch.device

    def run(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]: ...


#: ``(engine_dir, manifest, device) -> {graph name: runner}``: each checks its runtime and the
#: machine, verifies the files it opens against the manifest, and opens every graph.
RunnerFactory = Callable[[Path, EngineManifest, torch.device], dict[str, GraphRunner]]
RUNNERS: dict[EngineRuntime, RunnerFactory] = {
    EngineRuntime.ONNXRUNTIME: onnxruntime_runners,  # type: ignore[dict-item]
    EngineRuntime.TENSORRT: tensorrt_runners,  # type: ignore[dict-item]
}


def load_dino_processor(engine_dir: str | Path, manifest: EngineManifest) -> Any:
    """The DINOv2 image processor saved with a CPM engine (PIL backend, as the PyTorch path),
    after checking its files against the manifest."""
    path = Path(engine_dir) / DINO_PROCESSOR_DIR
    if not path.is_dir():
        raise EngineError(
            f"CPM engine {str(engine_dir)!r} lacks its {DINO_PROCESSOR_DIR}/ folder; re-export it with sd4match-export"
        )
    # transformers reads what it finds in the folder: every file there must be listed and verified.
    present = sorted(p.relative_to(engine_dir).as_posix() for p in path.rglob("*") if not p.is_dir())
    verify_files(engine_dir, manifest, present)
    with _processor_errors(path):
        return load_pil_processor(path)


@contextlib.contextmanager
def _processor_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EngineError(f"cannot read the DINOv2 processor in {str(path)!r} ({err}); re-export the engine with sd4match-export") from None


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


class EngineFeatureBackend:
    """Images + noise -> raw features through an engine's graphs.

    Args:
        engine_dir: the engine directory.
        manifest: its (checked) manifest.
        runners: ``{graph name: runner}`` for ``vae_encoder``, ``unet`` (and ``prompt_net``).
        name: backend name (``"onnxruntime"``, ``"tensorrt"``).
        device: the device the graphs run on.
        dino_processor: the DINOv2 image processor (CPM engines).
    """

    def __init__(
        self,
        engine_dir: str | Path,
        manifest: EngineManifest,
        runners: dict[str, GraphRunner],
        name: str,
        device: torch.device,
        dino_processor: Any = None,
        memory_budget: int | None = None,
    ) -> None:
        self.engine_dir = Path(engine_dir)
        self.memory_budget = memory_budget
        self.manifest = manifest
        self.runners = runners
        self.name = name
        self.device = device
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

    def _context_feed(self, batch: ImageBatch, contexts: Tensor | None) -> dict[str, Tensor]:
        """The UNet's prompt input: a class index per image (table), the contexts (CPM), or none."""
        if self.context_mode is ContextMode.TABLE:
            return {"class_index": torch.tensor([self._index[c] for c in batch.categories], dtype=torch.long)}  # type: ignore[index]
        if self.context_mode is ContextMode.INPUT:
            return {"context": contexts}  # type: ignore[dict-item]
        return {}

    def _features(self, batch: ImageBatch, contexts: Tensor | None = None) -> Tensor:
        vae_feeds = {"pixels": batch.pixels, "eps_vae": batch.eps_vae.float()}
        (latents,) = self._run_chunked(GraphName.VAE_ENCODER, vae_feeds, ["latents"])
        unet_feeds = {"latents": latents, "noise": batch.noise.float(), **self._context_feed(batch, contexts)}
        (features,) = self._run_chunked(GraphName.UNET, unet_feeds, ["features"])  # runners move inputs to their device
        return features.float()

    def _contexts(self, dino: Tensor) -> Tensor:
        """``(P, 77, D)`` CPM contexts from the prompt network; ``dino`` holds all sources, then all targets."""
        p = dino.shape[0] // 2
        (context,) = self._run_chunked(
            GraphName.PROMPT_NET, {"dino_source": dino[:p], "dino_target": dino[p:]}, ["context"]
        )
        return context

    def pair_contexts(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> Tensor:
        """``(P, 77, D)`` CPM contexts of P pairs from the prompt network."""
        return self._contexts(dino_pixels(self.dino_processor, sources + targets).float())

    # ------------------------------------------------------------------ FeatureBackend

    def max_batch_images(self) -> int:
        """Images per request batch under half the free memory, sized as the SD 2.1 architecture
        (its first VAE and UNet widths, 128 and 320); graphs still run in chunks of ``max_batch``."""
        dtype = torch.float16 if self.manifest.graphs[GraphName.UNET].precision == "fp16" else torch.float32
        return BatchBudget(self.feature_config, 128, 320, torch.float32, dtype, self.device, self.memory_budget).images()

    def prepare_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
    ) -> PreparedBatch:
        batch = ImageBatch.from_pairs(sources, targets, noises, self.feature_config.image_size, categories)
        needs_dino = self.context_mode is ContextMode.INPUT
        return PreparedBatch(batch, True, dino_pixels(self.dino_processor, sources + targets).float() if needs_dino else None)

    def prepare_images(
        self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]
    ) -> PreparedBatch:
        if self.context_mode is ContextMode.INPUT:
            raise ConfigError("CPM features depend on both images of a pair; use match() or match_batch()")
        return PreparedBatch(ImageBatch.from_images(images, noises, self.feature_config.image_size, categories), False)

    def extract_prepared(self, prepared: PreparedBatch) -> Tensor:
        needs_context = self.context_mode is ContextMode.INPUT
        contexts = per_image(self._contexts(prepared.dino_pixels)) if needs_context else None  # type: ignore[arg-type]
        return self._features(prepared.images, contexts)

    def extract_pairs(
        self,
        sources: list[np.ndarray],
        targets: list[np.ndarray],
        categories: list[str | None],
        noises: list[tuple[ImageNoise, ImageNoise]],
    ) -> Tensor:
        return self.extract_prepared(self.prepare_pairs(sources, targets, categories, noises))

    def extract_images(
        self, images: list[np.ndarray], categories: list[str | None], noises: list[ImageNoise]
    ) -> Tensor:
        return self.extract_prepared(self.prepare_images(images, categories, noises))


def resolve_runtime(manifest: EngineManifest, runtime: str | EngineRuntime = EngineRuntime.AUTO) -> EngineRuntime:
    """The runtime that opens an engine: ``auto`` is TensorRT when every graph has a plan, else ONNX Runtime.

    Raises:
        ConfigError: an unknown runtime, or TensorRT for a directory without plans.
    """
    try:
        runtime = EngineRuntime(runtime)
    except ValueError:
        known = ", ".join(r.value for r in EngineRuntime)
        raise ConfigError(f"unknown engine_runtime {runtime!r}; choose one of: {known}") from None
    has_plans = all(g.plan for g in manifest.graphs.values())
    if runtime is EngineRuntime.AUTO:
        return EngineRuntime.TENSORRT if has_plans else EngineRuntime.ONNXRUNTIME
    if runtime is EngineRuntime.TENSORRT and not has_plans:
        raise ConfigError(
            "the engine holds no TensorRT plans; build them with sd4match-export --engine trt, "
            "or use engine_runtime='onnxruntime'"
        )
    return runtime


#: The torch dtype of each UNet precision of an engine.
_PRECISION_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16}


def check_requested_settings(manifest: EngineManifest, requested: dict[str, Any]) -> None:
    """Refuse explicit settings an engine cannot honour (its values are baked in at export).

    Args:
        manifest: the engine's manifest.
        requested: ``{"image_size", "timestep", "ensemble", "dtype", "vae_dtype", "compile", "dino",
            "prompt"}`` as passed; ``None`` means "the engine's own value" (its prompt, for ``prompt``).

    Raises:
        ConfigError: a setting that is not the engine's (or not an integer where one is needed).
    """
    baked = {"image_size": manifest.image_size, "timestep": manifest.timestep, "ensemble": manifest.ensemble}
    for name, value in requested.items():
        if value is None:
            continue
        if name in baked and check_int(name, value) != baked[name]:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"the engine was exported with {name}={baked[name]}; {name}={value} cannot be honoured by it: pass "
                f"{name}=None (the engine's value), or export another engine with sd4match-export {flag} {value}"
            )
        if name == "dtype" and value != _PRECISION_DTYPES[Precision(manifest.precision)]:
            raise ConfigError(
                f"the engine's UNet is {manifest.precision} (baked at export); dtype={value} cannot be honoured by it: "
                "pass dtype=None, or export another engine with sd4match-export --dtype fp16|fp32"
            )
        if name in ("vae_dtype", "compile"):
            raise ConfigError(
                f"{name}= applies to the PyTorch path; an engine runs the graphs it was exported with (its VAE encoder "
                f"in float32): pass {name}={'False' if name == 'compile' else 'None'}, or load the diffusers model instead"
            )
        if name == "dino":
            raise ConfigError(
                "dino= applies to the PyTorch path; an engine carries its DINOv2 in prompt_net.onnx: pass dino=None"
            )
        if name == "prompt":
            raise ConfigError(
                "this is an engine directory: its prompt was baked in at export (prompt=None here); "
                "export another engine for another prompt (sd4match-export --prompt ...)"
            )


def open_engine(
    engine_dir: str | Path,
    device: torch.device,
    runtime: str | EngineRuntime = EngineRuntime.AUTO,
    requested: dict[str, Any] | None = None,
    memory_budget: int | None = None,
) -> EngineFeatureBackend:
    """Open an engine directory with ONNX Runtime or TensorRT.

    Args:
        engine_dir: a directory written by ``sd4match-export``.
        device: ``cuda`` runs ONNX Runtime's CUDA provider (when installed) or TensorRT; ``cpu``
            runs ONNX Runtime on the CPU.
        runtime: ``"auto"`` (TensorRT when the directory holds plans, else ONNX Runtime),
            ``"onnxruntime"`` or ``"tensorrt"``.
        requested: explicit settings the caller asked for (:func:`check_requested_settings`).
        memory_budget: bytes one request batch may use (``None``: half of the free memory).

    Raises:
        ConfigError: unknown runtime, or a requested setting the engine cannot honour.
        EngineError: bad manifest, files that differ from it or leave the directory, graphs
        whose interface differs from it, plans for another GPU/TensorRT, runtime errors at open.
        BackendUnavailableError: the runtime is not installed.
    """
    # 1. Read and check the manifest and the requested settings, choose the runtime
    engine_dir = Path(engine_dir)
    manifest = read_manifest(engine_dir)
    check_requested_settings(manifest, requested or {})
    chosen = resolve_runtime(manifest, runtime)
    # 2. Verify the files the runtime loads and open one runner per graph; the batches are prepared
    #    for (pinned, budgeted by) the device the graphs really run on
    runners = RUNNERS[chosen](engine_dir, manifest, torch.device(device))
    runs_on = runners[GraphName.UNET].device
    # 3. The DINOv2 processor of a CPM engine
    needs_dino = manifest.context_mode == ContextMode.INPUT
    processor = load_dino_processor(engine_dir, manifest) if needs_dino else None
    return EngineFeatureBackend(engine_dir, manifest, runners, str(chosen), runs_on, processor, memory_budget)
