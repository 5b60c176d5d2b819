"""TensorRT plans from the exported ONNX graphs (TensorRT 10+ Python API), and their checks.

Build (per graph): ``Builder`` -> ``create_network(STRONGLY_TYPED)`` (networks are always
explicit-batch in TensorRT 10) -> ``OnnxParser.parse_from_file`` (finds ``<graph>.onnx.data``
next to the file) -> a builder config with a workspace limit, one optimization profile over the
dynamic batch axis (``min=1, opt, max=max_batch``) and a timing cache shared by the graphs and
kept in the directory for later builds -> ``build_serialized_network`` -> ``<graph>.plan``.

Precision: the network is **strongly typed**: TensorRT keeps the types of the ONNX graph. A
``--dtype fp16`` export already holds a float16 UNet with float32 attention logits/softmax and
normalisations (``precision.py``), and a strongly typed build keeps those islands in float32;
the weakly typed ``BuilderFlag.FP16`` route (deprecated in 10.12, removed in 11) could run them
in float16. float32 graphs stay float32.

A plan runs only with the TensorRT version and the GPU architecture it was built for;
:func:`check_plan_compatibility` compares the manifest with the running machine and refuses
otherwise. The pure helpers here (profiles, naming, checks) are tested without TensorRT; the
build itself needs TensorRT and a GPU and was **not run** in this project's CI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, EngineError
from .config import BATCH_DIM, PAIRS_DIM
from .manifest import TensorRTInfo, TensorSpec

__all__ = [
    "MIN_TENSORRT_MAJOR",
    "build_plan",
    "check_plan_compatibility",
    "cuda_compute_capability",
    "import_tensorrt",
    "profile_shapes",
]

MIN_TENSORRT_MAJOR = 10
_INSTALL_HINT = (
    "install TensorRT 10 or newer for your CUDA version (NVIDIA's wheels: pip install tensorrt-cu12, "
    "or the TensorRT tar/deb packages); the 'tensorrt' name on PyPI alone may be a stub without the builder"
)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, version 10 or newer.

    Raises:
        BackendUnavailableError: TensorRT is missing, a stub, or older than 10.
    """
    try:
        import tensorrt as trt
    except Exception as err:  # noqa: BLE001 - ImportError, or a stub failing to load libnvinfer
        raise BackendUnavailableError(
            f"TensorRT is not available ({type(err).__name__}: {err}); {_INSTALL_HINT}"
        ) from None
    version = str(getattr(trt, "__version__", "0"))
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise BackendUnavailableError(
            f"the installed 'tensorrt' package ({version}) has no builder/runtime; {_INSTALL_HINT}"
        )
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        raise BackendUnavailableError(f"TensorRT {version} is too old; {_INSTALL_HINT}")
    return trt


def cuda_compute_capability(device: Any = None) -> tuple[str, str]:
    """``("major.minor", device name)`` of a CUDA device, via torch.

    Raises:
        BackendUnavailableError: no CUDA device.
    """
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)"
        )
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}", torch.cuda.get_device_name(device)


def profile_shapes(inputs: tuple[TensorSpec, ...], max_batch: int, opt_batch: int) -> dict[str, dict[str, list[int]]]:
    """The optimization profile of one graph: ``{input: {"min", "opt", "max"}}``.

    The image batch axis (``batch``) ranges over ``1 .. max_batch`` and is tuned for
    ``opt_batch``; the pair axis of the prompt network (``pairs``) over ``1 .. max_batch`` tuned
    for ``max(1, opt_batch // 2)``. Inputs without dynamic axes get one fixed shape.

    Raises:
        EngineError: an input has a dynamic axis this SDK does not know.
    """
    ranges = {BATCH_DIM: (1, opt_batch, max_batch), PAIRS_DIM: (1, max(1, opt_batch // 2), max_batch)}
    profile = {}
    for spec in inputs:
        unknown = set(spec.dynamic_axes.values()) - set(ranges)
        if unknown:
            raise EngineError(f"input {spec.name!r} has dynamic axes {sorted(unknown)}; known: {sorted(ranges)}")
        profile[spec.name] = {
            key: list(spec.concrete({name: r[i] for name, r in ranges.items()}))
            for i, key in enumerate(("min", "opt", "max"))
        }
    return profile


def check_plan_compatibility(info: TensorRTInfo | None, compute_capability: str, trt_version: str) -> None:
    """Refuse plans built for another GPU architecture or TensorRT version.

    Args:
        info: the manifest's ``tensorrt`` section.
        compute_capability: ``"major.minor"`` of the GPU that would run the plans.
        trt_version: the installed ``tensorrt.__version__``.

    Raises:
        EngineError: the plans cannot run here; the message says how to rebuild them.
    """
    rebuild = (
        "rebuild the plans on this machine: sd4match-export --engine trt ... (or run the directory's "
        "ONNX graphs with Matcher.from_pretrained(DIR, engine_runtime='onnxruntime'))"
    )
    if info is None:
        raise EngineError(f"the manifest lists TensorRT plans but no 'tensorrt' section (GPU, version); {rebuild}")
    if info.compute_capability != compute_capability:
        raise EngineError(
            f"the TensorRT plans were built for a GPU of compute capability {info.compute_capability} "
            f"({info.device_name or 'unknown GPU'}); this GPU has compute capability {compute_capability}. "
            f"Plans are specific to the GPU architecture: {rebuild}"
        )
    if info.version != trt_version:
        raise EngineError(
            f"the TensorRT plans were built with TensorRT {info.version}; this machine has TensorRT "
            f"{trt_version}, which cannot load them: {rebuild}"
        )


def build_plan(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    profile: dict[str, dict[str, list[int]]],
    timing_cache: str | os.PathLike | None = None,
    workspace_bytes: int = 8 << 30,
    trt: Any = None,
) -> None:
    """Build one TensorRT plan from an ONNX file (TensorRT 10+ API, strongly typed).

    Args:
        onnx_path: the graph (with its ``.onnx.data`` beside it, if any).
        plan_path: where to write the serialized engine.
        profile: ``{input: {"min", "opt", "max"}}`` (see :func:`profile_shapes`).
        timing_cache: a timing-cache file, read if it exists and rewritten after the build.
        workspace_bytes: builder workspace limit.
        trt: the ``tensorrt`` module (imported when ``None``).

    Raises:
        BackendUnavailableError: no TensorRT. EngineError: parsing or building failed.
    """
    trt = trt or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strongly_typed) if strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {str(onnx_path)!r}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    optimization_profile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimization_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build a plan from {str(onnx_path)!r} (see the TensorRT log above)")
    Path(plan_path).write_bytes(memoryview(serialized))
    if cache_path is not None:
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
