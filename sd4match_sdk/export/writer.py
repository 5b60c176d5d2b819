"""Write an engine directory (docs/design.md §13.10): ONNX graphs, optional TensorRT plans, manifest.

Layout (``docs/export.md`` documents every tensor)::

    DIR/manifest.json                written last: a directory without it is an unfinished export
    DIR/vae_encoder.onnx             pixels, eps_vae -> latents                       (float32)
    DIR/unet.onnx [+ unet.onnx.data] latents, noise [, class_index | context] -> features, features_normalized
    DIR/prompt_net.onnx              CPM only: dino_source, dino_target -> context    (float32)
    DIR/dino_processor/              CPM only: the DINOv2 image-processor config the SDK applies
    DIR/*.plan, DIR/timing.cache     --engine trt only

The graphs reuse the SDK's PyTorch modules (``exporters.py``, ``graphs.py``); the prompt context is
computed here with the PyTorch text encoder and baked into the UNet graph (fixed or as a table),
or left as an input for CPM prompts, whose prompt network becomes its own graph.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import torch

from .._version import __version__
from ..atomic import TEMP_SUFFIX
from ..console import check_output_dir
from ..engine.directory import hash_files, is_engine_directory, is_unfinished_engine, write_manifest
from ..engine.format import (
    DINO_PROCESSOR_DIR,
    MANIFEST_FILE,
    TIMING_CACHE_FILE,
    ContextMode,
    EngineKind,
    GraphName,
    Precision,
    onnx_data_file,
    onnx_file,
    plan_file,
)
from ..engine.manifest import EngineManifest, GraphEntry
from ..errors import ConfigError
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents, load_dino, load_sd_components
from ..prompts import PromptContexts, PromptKind, PromptWeights, load_prompt
from ..runtimes import cuda_compute_capability, import_tensorrt
from .config import ExportConfig
from .describe import library_versions, preprocessing_description
from .exporters import ExportModels, export_prompt_network, export_unet, export_vae_encoder, restored_attention
from .onnx import ExportedGraph
from .plans import add_tensorrt_plans

__all__ = ["context_mode_for", "export_engine"]

Log = Callable[..., None]


@dataclass(frozen=True)
class ExportedGraphs:
    """The graphs an export wrote, each with its compute precision, and the DINOv2 processor (CPM)."""

    graphs: dict[GraphName, tuple[ExportedGraph, Precision]]
    dino_processor: Any = None


def context_mode_for(weights: PromptWeights, categories: tuple[str, ...]) -> ContextMode:
    """How the prompt reaches the UNet graph; checks ``categories`` against the prompt kind.

    Raises:
        ConfigError: categories given where they mean nothing, or missing for a ``{category}`` text.
    """
    template = weights.kind is PromptKind.TEXT and "{category}" in (weights.text or "")
    if categories and not template:
        raise ConfigError(
            "--categories applies only to text prompts with '{category}' (class prompts carry their categories)"
        )
    if template and not categories:
        raise ConfigError(
            f"the text prompt {weights.text!r} is filled per category: pass the categories to bake, "
            "e.g. --categories cat,dog"
        )
    if weights.kind is PromptKind.CPM:
        return ContextMode.INPUT
    if weights.kind is PromptKind.CLASS or template:
        return ContextMode.TABLE
    return ContextMode.FIXED


def export_engine(config: ExportConfig, log: Log = print, components: SDComponents | None = None) -> EngineManifest:
    """Export SD 2.1 features with a prompt to an engine directory.

    Args:
        config: what to export (see :class:`ExportConfig`).
        log: a ``print``-like function for progress lines (``lambda *a: None`` to silence).
        components: already loaded float32 SD parts to export instead of loading
            ``config.model`` (benchmarks export in-memory models; they are not modified).

    Returns:
        the manifest written to ``config.out``.

    Raises:
        ConfigError: bad options or a non-empty output directory. BackendUnavailableError:
        ``--engine trt`` without TensorRT or a GPU. PromptError/WeightsError/ModelNotFoundError:
        the prompt or model cannot be loaded. EngineError: an exporter or builder failed.
    """
    # 1. Check what can fail before the slow part: TensorRT and a GPU, the prompt, the directory
    trt = _tensorrt_for(config)
    weights = load_prompt(config.prompt)
    mode = context_mode_for(weights, config.categories)
    out = _prepare_out_dir(Path(config.out), config.overwrite)
    # 2. Load the model and encode the prompt
    models = _load_models(config, weights, components, log)
    # 3. Export the graphs (the caller's models get their attention processors back)
    with restored_attention(models.components.vae, models.components.unet):
        exported = _export_graphs(models, mode, config, out, log)
    # 4. Write the manifest: a complete ONNX engine, even if the TensorRT build below fails
    manifest = _onnx_manifest(config, weights, mode, models, exported, out)
    del models
    write_manifest(out, manifest)
    log(f"wrote {out / MANIFEST_FILE}")
    # 5. Build the TensorRT plans for this GPU
    if trt is not None:
        manifest = add_tensorrt_plans(out, config.tuned_batch, config.workspace_gib, log, trt)
    return manifest


def _tensorrt_for(config: ExportConfig) -> Any:
    """The ``tensorrt`` module when plans are asked for (checked with the GPU), else ``None``."""
    if config.engine is not EngineKind.TRT:
        return None
    trt = import_tensorrt()
    cuda_compute_capability()
    return trt


def _engine_names() -> set[str]:
    """The top-level names an export writes (and ``--overwrite`` may replace)."""
    graphs = {name(graph) for graph in GraphName for name in (onnx_file, onnx_data_file, plan_file)}
    return graphs | {MANIFEST_FILE, DINO_PROCESSOR_DIR, TIMING_CACHE_FILE}


def _prepare_out_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out``; an existing engine there is replaced only with ``overwrite``.

    ``--overwrite`` replaces only a directory that holds an engine (finished or not) and nothing
    else: any other content is refused, never deleted. The manifest goes first, so an
    interrupted re-export never looks finished. The TensorRT timing cache is kept: it speeds up
    the rebuild on the same GPU.
    """
    check_output_dir(out, "--out")
    existing = [p for p in out.iterdir()] if out.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(f"--out {str(out)!r} is not empty; choose a new directory or pass --overwrite")
    if existing:
        foreign = sorted(p.name for p in existing if p.name not in _engine_names() and not p.name.endswith(TEMP_SUFFIX))
        if foreign or not (is_engine_directory(out) or is_unfinished_engine(out)):
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise ConfigError(
                f"--out {str(out)!r} does not hold only an engine ({shown or 'no engine files'}); --overwrite replaces "
                "engine directories only: choose another --out, or empty the directory yourself"
            )
        (out / MANIFEST_FILE).unlink(missing_ok=True)
        for graph in GraphName:
            for name in (onnx_file(graph), onnx_data_file(graph), plan_file(graph)):
                (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / DINO_PROCESSOR_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_models(config: ExportConfig, weights: PromptWeights, components: SDComponents | None, log: Log) -> ExportModels:
    """The float32 SD parts (the caller's, or loaded from ``config.model``), the feature
    extractor over them and the prompt's contexts."""
    shared = components is not None
    if components is None:
        log(f"loading {config.model} ...")
        components = load_sd_components(config.model, torch.float32)
    extractor = SDFeatureExtractor(components.vae, components.unet, components.scheduler, config.feature.timestep)
    prompt = PromptContexts(weights, components.tokenizer, components.text_encoder)
    categories = tuple(weights.categories) if weights.kind is PromptKind.CLASS else config.categories
    return ExportModels(components, extractor.eval(), prompt, categories, shared)


def _export_graphs(models: ExportModels, mode: ContextMode, config: ExportConfig, out: Path, log: Log) -> ExportedGraphs:
    """VAE encoder, the CPM prompt network (with its DINOv2 processor config) and the UNet."""
    graphs = {GraphName.VAE_ENCODER: (export_vae_encoder(models, config, out, log), Precision.FP32)}
    processor = None
    if mode is ContextMode.INPUT:
        dino, processor = load_dino(config.dino)
        processor.save_pretrained(out / DINO_PROCESSOR_DIR)
        graphs[GraphName.PROMPT_NET] = (export_prompt_network(models, dino, processor, config, out, log), Precision.FP32)
    graphs[GraphName.UNET] = (export_unet(models, mode, config, out, log), config.dtype)
    return ExportedGraphs(graphs, processor)


def _graph_entry(graph: ExportedGraph, precision: Precision) -> GraphEntry:
    return GraphEntry(
        precision=str(precision),
        onnx=graph.onnx.name,
        onnx_data=graph.onnx_data.name if graph.onnx_data else None,
        inputs=graph.inputs,
        outputs=graph.outputs,
    )


def _written_files(out: Path, exported: ExportedGraphs) -> list[str]:
    """The files this export wrote: the graphs, their external data, the DINOv2 processor config."""
    names = [p.name for graph, _ in exported.graphs.values() for p in (graph.onnx, graph.onnx_data) if p is not None]
    processor = out / DINO_PROCESSOR_DIR
    if exported.dino_processor is not None and processor.is_dir():
        names += [p.relative_to(out).as_posix() for p in processor.rglob("*") if p.is_file()]
    return names


def _prompt_provenance(weights: PromptWeights, config: ExportConfig) -> dict[str, Any]:
    provenance = {**weights.metadata, "text": weights.text, "source": str(config.prompt) if config.prompt else None}
    return {k: v for k, v in provenance.items() if v is not None}


def _onnx_manifest(
    config: ExportConfig,
    weights: PromptWeights,
    mode: ContextMode,
    models: ExportModels,
    exported: ExportedGraphs,
    out: Path,
) -> EngineManifest:
    """The manifest of the ONNX engine just written (files hashed as they are on disk)."""
    feature, extractor = config.feature, models.extractor
    alpha_bar = float(models.components.scheduler.alphas_cumprod[feature.timestep])
    out_channels = exported.graphs[GraphName.UNET][0].outputs[0].shape[1]
    grid = feature.image_size // 16
    return EngineManifest(
        sdk_version=__version__,
        engine=str(EngineKind.ONNX),
        precision=str(config.dtype),
        prompt_kind=str(weights.kind),
        context_mode=str(mode),
        categories=tuple(models.categories),
        image_size=feature.image_size,
        timestep=feature.timestep,
        ensemble=feature.ensemble,
        max_batch=config.max_batch,
        opset=config.opset,
        attention_query_chunk=config.attention_chunk or 0,
        latent_shape=extractor.latent_shape(feature.image_size),
        feature_shape=(int(out_channels), grid, grid),
        scaling_factor=extractor.scaling_factor,
        noise_coefficients=(alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5),
        graphs={str(name): _graph_entry(graph, precision) for name, (graph, precision) in exported.graphs.items()},
        files=hash_files(out, _written_files(out, exported)),
        libraries=library_versions(),
        preprocessing=preprocessing_description(feature.image_size, exported.dino_processor),
        prompt=_prompt_provenance(weights, config),
        model=str(config.model),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
