"""The vocabulary of an engine directory: graph, file and axis names, kinds, precisions.

These names are the contract between the exporter (``sd4match_sdk.export``), the manifest
(:mod:`.manifest`), the Python runtime (:mod:`.runtime`) and the C++ consumer
(``docs/export.md``): change one and every reader must follow. This module imports nothing but
the standard library, so every layer can use it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BATCH_DIM",
    "DINO_PROCESSOR_DIR",
    "ENGINE_FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "PAIRS_DIM",
    "PROMPT_KINDS",
    "TIMING_CACHE_FILE",
    "ContextMode",
    "EngineKind",
    "EngineRuntime",
    "GraphName",
    "Precision",
    "onnx_data_file",
    "onnx_file",
    "plan_file",
]

#: The file that marks an engine directory; written last, so a directory without it is an
#: unfinished export.
MANIFEST_FILE = "manifest.json"
#: Marker that tells an engine manifest from any other JSON file.
ENGINE_FORMAT = "sd4match-engine"
#: The manifest schema this SDK writes and reads. Bump it when a reader of the old schema would
#: misread the new one (renamed tensors, new required inputs, changed semantics).
FORMAT_VERSION = 1
#: Name of the dynamic image-batch axis in every graph (VAE encoder, UNet).
BATCH_DIM = "batch"
#: Name of the dynamic pair-batch axis of the CPM prompt network.
PAIRS_DIM = "pairs"
#: Sub-directory with the DINOv2 image-processor config (CPM engines).
DINO_PROCESSOR_DIR = "dino_processor"
#: TensorRT timing cache written next to the plans (reused by later builds on the same GPU).
TIMING_CACHE_FILE = "timing.cache"
#: The ``prompt_kind`` values of a manifest (the values of ``sd4match_sdk.prompts.PromptKind``,
#: repeated here so that the format stays below the prompts layer; a test keeps them equal).
PROMPT_KINDS = ("text", "single", "class", "cpm")


class EngineKind(StrEnum):
    """What ``sd4match-export --engine`` writes."""

    ONNX = "onnx"  # ONNX graphs (ONNX Runtime, or any ONNX consumer)
    TRT = "trt"  # the ONNX graphs plus TensorRT plans built from them on this GPU


class EngineRuntime(StrEnum):
    """What runs an engine directory (``Matcher.from_pretrained(DIR, engine_runtime=...)``)."""

    AUTO = "auto"  # TensorRT when the directory holds plans, else ONNX Runtime
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


class Precision(StrEnum):
    """Precision of the UNet graph (the VAE encoder and the prompt network stay float32)."""

    FP32 = "fp32"
    FP16 = "fp16"


class ContextMode(StrEnum):
    """How the UNet graph gets its cross-attention context (docs/design.md §13.10)."""

    FIXED = "fixed"  # one context baked in (single prompts, text prompts without {category})
    TABLE = "table"  # a baked table of contexts + a class-index input (class prompts, {category} texts)
    INPUT = "input"  # the context is an input, computed by the prompt network (CPM)


class GraphName(StrEnum):
    """The graphs of an engine directory."""

    VAE_ENCODER = "vae_encoder"
    UNET = "unet"
    PROMPT_NET = "prompt_net"


def onnx_file(graph: GraphName | str) -> str:
    """``unet`` -> ``unet.onnx``."""
    return f"{graph}.onnx"


def onnx_data_file(graph: GraphName | str) -> str:
    """External weights of a graph over 2 GiB: ``unet`` -> ``unet.onnx.data``."""
    return f"{graph}.onnx.data"


def plan_file(graph: GraphName | str) -> str:
    """TensorRT plan of a graph: ``unet`` -> ``unet.plan``."""
    return f"{graph}.plan"

