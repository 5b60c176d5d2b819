"""Write an engine directory (SPEC 13, "Engines"): ONNX graphs, optional TensorRT plans, manifest.

Layout (``docs/export.md`` documents every tensor)::

    DIR/manifest.json                written last: a directory without it is an unfinished export
    DIR/vae_encoder.onnx             pixels, eps_vae -> latents                       (float32)
    DIR/unet.onnx [+ unet.onnx.data] latents, noise [, class_index | context] -> features, features_normalized
    DIR/prompt_net.onnx              CPM only: dino_source, dino_target -> context    (float32)
    DIR/dino_processor/              CPM only: the DINOv2 image-processor config the SDK applies
    DIR/*.plan, DIR/timing.cache     --engine trt only

The graphs reuse the SDK's PyTorch modules (``graphs.py``); the prompt context is computed here
with the PyTorch text encoder and baked into the UNet graph (fixed or as a table), or left as an
input for CPM prompts, whose prompt network becomes its own graph.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import ConfigError
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents, load_dino, load_sd_components
from ..prompts import PromptContexts, PromptKind, PromptWeights, load_prompt
from .attention import set_export_attention
from .config import (
    BATCH_DIM,
    DINO_PROCESSOR_DIR,
    PAIRS_DIM,
    TIMING_CACHE_FILE,
    ContextMode,
    EngineKind,
    ExportConfig,
    GraphName,
    Precision,
    onnx_data_file,
    onnx_file,
    plan_file,
)
from .graphs import (
    FixedContextUNetGraph,
    InputContextUNetGraph,
    PromptNetworkGraph,
    TableContextUNetGraph,
    VaeEncoderGraph,
)
from .manifest import (
    MANIFEST_FILE,
    EngineManifest,
    FileEntry,
    GraphEntry,
    TensorRTInfo,
    file_sha256,
    write_manifest,
)
from .onnx import ExportedGraph, export_onnx_graph
from .precision import to_float16_safe

__all__ = ["TENSOR_DESCRIPTIONS", "add_tensorrt_plans", "context_mode_for", "export_engine", "library_versions"]

#: Manifest descriptions of every graph tensor: layout, dtype, value range.
TENSOR_DESCRIPTIONS = {
    "pixels": "NCHW RGB float32 in [-1, 1]: the uint8 image resized to image_size x image_size with "
    "PIL bilinear (antialiased, aspect ratio not kept), then (x / 255 - 0.5) / 0.5",
    "eps_vae": "standard normal float32 draw for the VAE posterior sample, one (4, S/8, S/8) map per image",
    "latents": "VAE posterior sample times scaling_factor: (mean + std * eps_vae) * scaling_factor",
    "noise": "standard normal float32 diffusion noise, E maps per image (image-major: [image, member, 4, S/8, S/8])",
    "class_index": "int64 index of each image's category in the manifest's 'categories' list",
    "context": "float32 cross-attention context per image (B, 77, D): a pair's prompt_net output, "
    "repeated for its source and its target image",
    "features": "raw ensemble-mean up_blocks[1] feature map, float32; SD4Match samples query descriptors "
    "from THIS map and L2-normalises after sampling (SPEC 4)",
    "features_normalized": "features / (||features||_2 over channels + 1e-6) per cell, float32: the target "
    "side of the cosine map (dense matching)",
    "dino_source": "DINOv2 input of each pair's source image (float32): the ORIGINAL image, shortest edge "
    "resized to 256 (bicubic), centre crop 224, x / 255, ImageNet mean/std normalisation",
    "dino_target": "same as dino_source for each pair's target image",
}


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


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Versions of Python and the libraries that shape the exported files."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions.update(extra or {})
    return versions


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create ``out``; an existing engine there is replaced only with ``overwrite``.

    The manifest goes first, so an interrupted re-export never looks finished. The TensorRT
    timing cache is kept: it speeds up the rebuild on the same GPU.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    existing = [p for p in out.iterdir()] if out.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(f"--out {str(out)!r} is not empty; choose a new directory or pass --overwrite")
    if existing:
        (out / MANIFEST_FILE).unlink(missing_ok=True)
        for graph in GraphName:
            for name in (onnx_file(graph), onnx_data_file(graph), plan_file(graph)):
                (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / DINO_PROCESSOR_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _unet_graph(
    extractor: SDFeatureExtractor, prompt: PromptContexts, mode: ContextMode, categories: tuple[str, ...]
) -> tuple[torch.nn.Module, list[str]]:
    if mode is ContextMode.FIXED:
        return FixedContextUNetGraph(extractor, prompt.fixed(None)), ["latents", "noise"]
    if mode is ContextMode.TABLE:
        table = torch.cat([prompt.fixed(c) for c in categories])  # (K, 77, D)
        return TableContextUNetGraph(extractor, table), ["latents", "noise", "class_index"]
    return InputContextUNetGraph(extractor), ["latents", "noise", "context"]


def _example_unet_inputs(
    names: list[str], latent: tuple[int, int, int], ensemble: int, context: tuple[int, int], k: int
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    b = 2  # dynamic axes must not be exported at size 1
    examples = {
        "latents": torch.randn((b, *latent), generator=g),
        "noise": torch.randn((b, ensemble, *latent), generator=g),
        "class_index": torch.tensor([0, k - 1], dtype=torch.long),
        "context": torch.randn((b, *context), generator=g),
    }
    return tuple(examples[n] for n in names)


def _graph_entry(graph: ExportedGraph, precision: Precision) -> GraphEntry:
    return GraphEntry(
        precision=str(precision),
        onnx=graph.onnx.name,
        onnx_data=graph.onnx_data.name if graph.onnx_data else None,
        inputs=graph.inputs,
        outputs=graph.outputs,
    )


def _hash_files(out: Path) -> dict[str, FileEntry]:
    files = {}
    for path in sorted(
        p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.endswith(".tmp")
    ):
        files[path.relative_to(out).as_posix()] = FileEntry(file_sha256(path), path.stat().st_size)
    return files


def _preprocessing(config: ExportConfig, dino_processor: Any) -> dict[str, Any]:
    size = config.feature.image_size
    info: dict[str, Any] = {
        "sd_image": {
            "input": "uint8 RGB image of any size (grayscale/RGBA converted to RGB)",
            "resize": [size, size],
            "interpolation": "PIL Image.BILINEAR on the uint8 image (antialiased); aspect ratio not kept",
            "scale": "(x / 255 - 0.5) / 0.5 -> [-1, 1]",
            "layout": "NCHW float32",
        },
        "noise": {
            "distribution": "standard normal, float32",
            "order": "per image: eps_vae (1, 4, S/8, S/8) then noise (E, 4, S/8, S/8); for a pair, the source "
            "image draws first, then the target (one torch.Generator in the Python SDK)",
        },
        "coordinates": {
            "to_frame": "x_frame = x * S / W, y_frame = y * S / H (original pixels -> S x S frame)",
            "to_grid": "x_grid = x_frame * (G - 1) / (S - 1), G = S / 16 (align corners)",
            "from_grid": "x_frame = x_grid * (S - 1) / (G - 1); x = x_frame * W / S",
        },
        "matching": {
            "query": "bilinear sample (align corners, zero padding) of 'features' at the query, then L2-normalise",
            "target": "'features_normalized' (per-cell L2 normalised map)",
            "kernel_soft_argmax": {"sigma_cells": 7.0, "beta": 0.04},
        },
    }
    if dino_processor is not None:
        info["dino_image"] = {
            "input": "the ORIGINAL uint8 RGB image (not the S x S frame)",
            "shortest_edge": dino_processor.size.get("shortest_edge"),
            "interpolation": "bicubic (PIL)",
            "center_crop": [dino_processor.crop_size["height"], dino_processor.crop_size["width"]],
            "rescale_factor": float(dino_processor.rescale_factor),
            "mean": list(map(float, dino_processor.image_mean)),
            "std": list(map(float, dino_processor.image_std)),
            "layout": "NCHW float32",
            "processor_config": f"{DINO_PROCESSOR_DIR}/preprocessor_config.json",
        }
    return info


@contextlib.contextmanager
def _restore_attention(*models: Any) -> Iterator[None]:
    """Give diffusers models back their attention processors after the export replaced them."""
    saved = [model.attn_processors for model in models]
    try:
        yield
    finally:
        for model, processors in zip(models, saved):
            model.set_attn_processor(processors)


def _export_vae(
    extractor: SDFeatureExtractor, config: ExportConfig, out: Path, common: dict[str, Any], log: Any
) -> ExportedGraph:
    # The VAE's mid-block attends over all S/8 x S/8 positions too (9216 at 768 px): chunk it as the UNet.
    set_export_attention(extractor.vae, config.attention_chunk or None, upcast=False)
    log(f"exporting {onnx_file(GraphName.VAE_ENCODER)} ...")
    g = torch.Generator().manual_seed(0)
    size = config.feature.image_size
    pixels = torch.rand((2, 3, size, size), generator=g) * 2 - 1
    eps = torch.randn((2, *extractor.latent_shape(size)), generator=g)
    batch_axis = {0: BATCH_DIM}
    dynamic = {"pixels": batch_axis, "eps_vae": batch_axis, "latents": batch_axis}
    path = out / onnx_file(GraphName.VAE_ENCODER)
    return export_onnx_graph(
        VaeEncoderGraph(extractor), (pixels, eps), path, ["pixels", "eps_vae"], ["latents"], dynamic, **common
    )


def _export_prompt_net(
    graph: PromptNetworkGraph, processor: Any, out: Path, common: dict[str, Any], log: Any
) -> ExportedGraph:
    log(f"exporting {onnx_file(GraphName.PROMPT_NET)} ...")
    crop = processor.crop_size
    pixels = torch.randn((2, 3, crop["height"], crop["width"]), generator=torch.Generator().manual_seed(0))
    pairs_axis = {0: PAIRS_DIM}
    dynamic = {"dino_source": pairs_axis, "dino_target": pairs_axis, "context": pairs_axis}
    path = out / onnx_file(GraphName.PROMPT_NET)
    return export_onnx_graph(
        graph, (pixels, pixels.flip(0)), path, ["dino_source", "dino_target"], ["context"], dynamic, **common
    )


def _export_unet(
    extractor: SDFeatureExtractor,
    components: SDComponents,
    copy_for_fp16: bool,
    prompt: PromptContexts,
    mode: ContextMode,
    categories: tuple[str, ...],
    config: ExportConfig,
    text_shape: tuple[int, int],
    out: Path,
    common: dict[str, Any],
    log: Any,
) -> ExportedGraph:
    chunk = config.attention_chunk or None
    if config.dtype is Precision.FP16:
        if copy_for_fp16:  # the caller's UNet stays float32
            unet = copy.deepcopy(components.unet)
            extractor = SDFeatureExtractor(components.vae, unet, components.scheduler, extractor.timestep).eval()
        to_float16_safe(extractor.unet, chunk)
    else:
        set_export_attention(extractor.unet, chunk, upcast=False)
    module, inputs = _unet_graph(extractor, prompt, mode, categories)  # contexts come from the fp32 text encoder
    log(f"exporting {onnx_file(GraphName.UNET)} ({config.dtype}) ...")
    latent = extractor.latent_shape(config.feature.image_size)
    examples = _example_unet_inputs(inputs, latent, config.feature.ensemble, text_shape, max(len(categories), 1))
    outputs = ["features", "features_normalized"]
    return export_onnx_graph(
        module,
        examples,
        out / onnx_file(GraphName.UNET),
        inputs,
        outputs,
        {name: {0: BATCH_DIM} for name in (*inputs, *outputs)},
        **common,
    )


def export_engine(config: ExportConfig, log: Any = print, components: SDComponents | None = None) -> EngineManifest:
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
    out = Path(config.out)
    trt = None
    if config.engine is EngineKind.TRT:  # fail before the slow part
        from .tensorrt import cuda_compute_capability, import_tensorrt

        trt = import_tensorrt()
        cuda_compute_capability()
    weights = load_prompt(config.prompt)
    mode = context_mode_for(weights, config.categories)
    _prepare_out_dir(out, config.overwrite)

    feature = config.feature
    copy_for_fp16 = components is not None
    if components is None:
        log(f"loading {config.model} ...")
        components = load_sd_components(config.model, torch.float32)
    extractor = SDFeatureExtractor(components.vae, components.unet, components.scheduler, feature.timestep).eval()
    prompt = PromptContexts(weights, components.tokenizer, components.text_encoder)
    categories = tuple(weights.categories) if weights.kind is PromptKind.CLASS else config.categories
    common = {
        "opset": config.opset,
        "descriptions": TENSOR_DESCRIPTIONS,
        "external_data_threshold": config.external_data_threshold,
    }

    text_shape = (
        int(components.text_encoder.config.max_position_embeddings),
        int(components.text_encoder.config.hidden_size),
    )
    dino_processor = None
    with _restore_attention(components.vae, components.unet):  # callers' models keep their attention
        exported = {GraphName.VAE_ENCODER: (_export_vae(extractor, config, out, common, log), Precision.FP32)}
        if mode is ContextMode.INPUT:
            dino, dino_processor = load_dino(config.dino)
            dino_processor.save_pretrained(out / DINO_PROCESSOR_DIR)
            network = PromptNetworkGraph(dino, prompt.cpm, components.text_encoder, *prompt.special_tokens())  # type: ignore[arg-type]
            exported[GraphName.PROMPT_NET] = (
                _export_prompt_net(network, dino_processor, out, common, log),
                Precision.FP32,
            )
        unet = _export_unet(
            extractor, components, copy_for_fp16, prompt, mode, categories, config, text_shape, out, common, log
        )
        exported[GraphName.UNET] = (unet, config.dtype)
    scaling_factor = extractor.scaling_factor
    alpha_bar = float(components.scheduler.alphas_cumprod[feature.timestep])
    latent = extractor.latent_shape(feature.image_size)
    del extractor, components

    image_size = feature.image_size
    out_channels = exported[GraphName.UNET][0].outputs[0].shape[1]
    manifest = EngineManifest(
        sdk_version=__version__,
        engine=str(EngineKind.ONNX),
        precision=str(config.dtype),
        prompt_kind=str(weights.kind),
        context_mode=str(mode),
        categories=tuple(categories),
        image_size=image_size,
        timestep=feature.timestep,
        ensemble=feature.ensemble,
        max_batch=config.max_batch,
        opset=config.opset,
        attention_query_chunk=config.attention_chunk or 0,
        latent_shape=latent,
        feature_shape=(int(out_channels), image_size // 16, image_size // 16),
        scaling_factor=scaling_factor,
        noise_coefficients=(alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5),
        graphs={str(n): _graph_entry(gr, p) for n, (gr, p) in exported.items()},
        files=_hash_files(out),
        libraries=library_versions(),
        preprocessing=_preprocessing(config, dino_processor),
        prompt={
            k: v
            for k, v in {
                **weights.metadata,
                "text": weights.text,
                "source": str(config.prompt) if config.prompt else None,
            }.items()
            if v is not None
        },
        model=str(config.model),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_manifest(out, manifest)  # a complete ONNX engine, even if the TensorRT build below fails
    log(f"wrote {out / MANIFEST_FILE}")
    if trt is not None:
        manifest = add_tensorrt_plans(
            out, opt_batch=config.tuned_batch, workspace_gib=config.workspace_gib, log=log, trt=trt
        )
    return manifest


def add_tensorrt_plans(
    engine_dir: str | Path,
    opt_batch: int | None = None,
    workspace_gib: float = 8.0,
    log: Any = print,
    trt: Any = None,
) -> EngineManifest:
    """Build TensorRT plans for every graph of an ONNX engine directory, on this GPU.

    The ONNX files are checked against the manifest first; the plans, the timing cache and the
    updated manifest (``engine: trt``, each graph's ``plan``, the ``tensorrt`` section with the
    version, the compute capability and the optimization profiles) are written next to them. The
    ONNX graphs stay, so the directory also runs with ONNX Runtime. Use it to export anywhere and
    build the plans on the deployment GPU (``sd4match-export --out DIR --engine trt --plans-only``).

    Args:
        engine_dir: an engine directory written by :func:`export_engine`.
        opt_batch: the image batch TensorRT tunes for (default: one pair, capped by max_batch).
        workspace_gib: builder workspace limit.
        log: a ``print``-like function for progress lines.
        trt: the ``tensorrt`` module (imported when ``None``).

    Raises:
        BackendUnavailableError: no TensorRT 10+ or no GPU. EngineError: bad manifest or files,
        or a failed build.
    """
    from .manifest import read_manifest, verify_files
    from .tensorrt import build_plan, cuda_compute_capability, import_tensorrt, profile_shapes

    out = Path(engine_dir)
    trt = trt or import_tensorrt()
    compute_capability, device_name = cuda_compute_capability()
    manifest = read_manifest(out)
    verify_files(out, manifest, [f for g in manifest.graphs.values() for f in g.files("onnxruntime")])
    opt = opt_batch or min(2, manifest.max_batch)
    if not 1 <= opt <= manifest.max_batch:
        raise ConfigError(f"opt_batch must lie in [1, max_batch={manifest.max_batch}] (got {opt})")
    graphs, profiles = {}, {}
    for name, graph in manifest.graphs.items():
        profiles[name] = profile_shapes(graph.inputs, manifest.max_batch, opt)
        log(f"building {plan_file(name)} with TensorRT {trt.__version__} (compute capability {compute_capability}) ...")
        build_plan(
            out / graph.onnx,
            out / plan_file(name),
            profiles[name],
            out / TIMING_CACHE_FILE,
            int(workspace_gib * (1 << 30)),
            trt,
        )
        graphs[name] = replace(graph, plan=plan_file(name))
    manifest = replace(
        manifest,
        engine=str(EngineKind.TRT),
        graphs=graphs,
        files=_hash_files(out),
        libraries={**manifest.libraries, "tensorrt": str(trt.__version__)},
        tensorrt=TensorRTInfo(str(trt.__version__), compute_capability, device_name, True, profiles),
    )
    write_manifest(out, manifest)
    log(f"wrote {out / MANIFEST_FILE} (TensorRT plans)")
    return manifest
