"""One function per graph of an engine: wrap the PyTorch module, make example inputs, export it.

The modules are the SDK's own (``graphs.py`` wraps the feature extractor, the CPM and the text
encoder); the attention is swapped for the export processor (``attention.py``: query-chunked,
float32 logits in float16 graphs) and restored by :func:`restored_attention` afterwards, so a
caller's models come back as they were.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..engine.format import BATCH_DIM, PAIRS_DIM, ContextMode, GraphName, Precision, onnx_file
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..prompts import PromptContexts
from .attention import set_export_attention
from .config import ExportConfig
from .describe import TENSOR_DESCRIPTIONS
from .graphs import (
    FixedContextUNetGraph,
    InputContextUNetGraph,
    PromptNetworkGraph,
    TableContextUNetGraph,
    VaeEncoderGraph,
)
from .onnx import ExportedGraph, export_onnx_graph
from .precision import to_float16_safe

__all__ = ["ExportModels", "export_prompt_network", "export_unet", "export_vae_encoder", "restored_attention"]

Log = Callable[..., None]


@dataclass(frozen=True)
class ExportModels:
    """The float32 PyTorch pieces an export reads.

    Attributes:
        components: the SD parts.
        extractor: the feature extractor over them (the oracle the graphs wrap).
        prompt: the prompt's contexts, encoded by the float32 text encoder.
        categories: the class-index order of a context table (else empty).
        shared: the components belong to the caller: copy the UNet before converting it to fp16.
    """

    components: SDComponents
    extractor: SDFeatureExtractor
    prompt: PromptContexts
    categories: tuple[str, ...]
    shared: bool

    @property
    def text_shape(self) -> tuple[int, int]:
        """``(77, D)``: one cross-attention context."""
        config = self.components.text_encoder.config
        return int(config.max_position_embeddings), int(config.hidden_size)


@contextlib.contextmanager
def restored_attention(*models: Any) -> Iterator[None]:
    """Give diffusers models back their attention processors after the export replaced them."""
    saved = [model.attn_processors for model in models]
    try:
        yield
    finally:
        for model, processors in zip(models, saved):
            model.set_attn_processor(processors)


def _onnx_options(config: ExportConfig) -> dict[str, Any]:
    return {
        "opset": config.opset,
        "descriptions": TENSOR_DESCRIPTIONS,
        "external_data_threshold": config.external_data_threshold,
    }


def export_vae_encoder(models: ExportModels, config: ExportConfig, out: Path, log: Log) -> ExportedGraph:
    """``vae_encoder.onnx``: pixels, eps_vae -> latents (float32)."""
    extractor = models.extractor
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
        VaeEncoderGraph(extractor), (pixels, eps), path, ["pixels", "eps_vae"], ["latents"], dynamic,
        **_onnx_options(config),
    )  # fmt: skip


def export_prompt_network(
    models: ExportModels, dino: nn.Module, processor: Any, config: ExportConfig, out: Path, log: Log
) -> ExportedGraph:
    """``prompt_net.onnx`` (CPM): dino_source, dino_target -> context (float32)."""
    graph = PromptNetworkGraph(dino, models.prompt.cpm, models.components.text_encoder, *models.prompt.special_tokens())  # type: ignore[arg-type]
    log(f"exporting {onnx_file(GraphName.PROMPT_NET)} ...")
    crop = processor.crop_size
    pixels = torch.randn((2, 3, crop["height"], crop["width"]), generator=torch.Generator().manual_seed(0))
    pairs_axis = {0: PAIRS_DIM}
    dynamic = {"dino_source": pairs_axis, "dino_target": pairs_axis, "context": pairs_axis}
    path = out / onnx_file(GraphName.PROMPT_NET)
    return export_onnx_graph(
        graph, (pixels, pixels.flip(0)), path, ["dino_source", "dino_target"], ["context"], dynamic,
        **_onnx_options(config),
    )  # fmt: skip


def _unet_graph(extractor: SDFeatureExtractor, models: ExportModels, mode: ContextMode) -> tuple[nn.Module, list[str]]:
    """The UNet graph module of a context mode and its input names (contexts from the fp32 text encoder)."""
    if mode is ContextMode.FIXED:
        return FixedContextUNetGraph(extractor, models.prompt.fixed(None)), ["latents", "noise"]
    if mode is ContextMode.TABLE:
        table = torch.cat([models.prompt.fixed(c) for c in models.categories])  # (K, 77, D)
        return TableContextUNetGraph(extractor, table), ["latents", "noise", "class_index"]
    return InputContextUNetGraph(extractor), ["latents", "noise", "context"]


def _example_unet_inputs(names: list[str], models: ExportModels, config: ExportConfig) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    b = 2  # dynamic axes must not be exported at size 1
    latent = models.extractor.latent_shape(config.feature.image_size)
    examples = {
        "latents": torch.randn((b, *latent), generator=g),
        "noise": torch.randn((b, config.feature.ensemble, *latent), generator=g),
        "class_index": torch.tensor([0, max(len(models.categories), 1) - 1], dtype=torch.long),
        "context": torch.randn((b, *models.text_shape), generator=g),
    }
    return tuple(examples[n] for n in names)


def _unet_extractor(models: ExportModels, config: ExportConfig) -> SDFeatureExtractor:
    """The extractor whose UNet is exported: converted to safe float16 for fp16 (a copy when the
    components are the caller's), else given the chunked float32 attention."""
    chunk = config.attention_chunk or None
    extractor = models.extractor
    if config.dtype is not Precision.FP16:
        set_export_attention(extractor.unet, chunk, upcast=False)
        return extractor
    if models.shared:  # the caller's UNet stays float32
        parts = models.components
        extractor = SDFeatureExtractor(parts.vae, copy.deepcopy(parts.unet), parts.scheduler, extractor.timestep).eval()
    to_float16_safe(extractor.unet, chunk)
    return extractor


def export_unet(models: ExportModels, mode: ContextMode, config: ExportConfig, out: Path, log: Log) -> ExportedGraph:
    """``unet.onnx`` (+ ``.onnx.data``): latents, noise [, class_index | context] -> features,
    features_normalized, in the configured precision."""
    module, inputs = _unet_graph(_unet_extractor(models, config), models, mode)
    log(f"exporting {onnx_file(GraphName.UNET)} ({config.dtype}) ...")
    outputs = ["features", "features_normalized"]
    return export_onnx_graph(
        module,
        _example_unet_inputs(inputs, models, config),
        out / onnx_file(GraphName.UNET),
        inputs,
        outputs,
        {name: {0: BATCH_DIM} for name in (*inputs, *outputs)},
        **_onnx_options(config),
    )
