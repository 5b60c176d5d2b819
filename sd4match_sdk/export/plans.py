"""TensorRT plans from the exported ONNX graphs (TensorRT 10+ Python API).

Two halves:

* **What to build** is a pure function of the manifest (:func:`plan_settings`): per graph, the
  ONNX file, the plan file, one optimization profile over the dynamic axes (``min=1, opt,
  max=max_batch``), the workspace limit, a strongly typed network and the timing cache shared by
  the graphs. :func:`plans_manifest` is the manifest after the build. Both are tested here.
* **The build** (:func:`build_plan`) hands those settings to TensorRT: ``Builder`` ->
  ``create_network(STRONGLY_TYPED)`` -> ``OnnxParser.parse_from_file`` (finds
  ``<graph>.onnx.data`` next to the file) -> builder config -> ``build_serialized_network``.
  It follows TensorRT 10's documented API and was **not run** in this project's CI (the builder
  is not installable from the registries CI reaches); docs/export.md says so.

Precision: the network is **strongly typed**: TensorRT keeps the types of the ONNX graph. A
``--dtype fp16`` export already holds a float16 UNet with float32 attention logits/softmax and
normalisations (``precision.py``), and a strongly typed build keeps those islands in float32;
the weakly typed ``BuilderFlag.FP16`` route (deprecated in 10.12, removed in 11) could run them
in float16. float32 graphs stay float32.

A plan runs only with the TensorRT version and GPU architecture it was built for: the manifest
records both, and :func:`sd4match_sdk.engine.directory.check_plan_compatibility` refuses others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..engine.directory import hash_files, read_manifest, write_manifest
from ..engine.graph_files import checked_onnx_graph
from ..engine.format import BATCH_DIM, MANIFEST_FILE, PAIRS_DIM, TIMING_CACHE_FILE, EngineKind, plan_file
from ..engine.manifest import EngineManifest, FileEntry, TensorRTInfo, TensorSpec
from ..errors import ConfigError, EngineError
from ..runtimes import cuda_compute_capability, import_tensorrt

__all__ = ["PlanSettings", "add_tensorrt_plans", "build_plan", "plan_settings", "plans_manifest", "profile_shapes"]

#: Builder workspace limit when none is given.
DEFAULT_WORKSPACE_GIB = 8.0


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


@dataclass(frozen=True)
class PlanSettings:
    """How one graph's plan is built.

    Attributes:
        graph: the graph name.
        onnx: the ONNX file, relative to the engine directory.
        plan: the plan file to write, relative to the engine directory.
        profile: ``{input: {"min", "opt", "max"}}`` (:func:`profile_shapes`).
        workspace_bytes: builder workspace limit.
        strongly_typed: build a strongly typed network (the ONNX types decide precision).
        timing_cache: the timing-cache file shared by all graphs, relative to the directory.
    """

    graph: str
    onnx: str
    plan: str
    profile: dict[str, dict[str, list[int]]]
    workspace_bytes: int
    strongly_typed: bool = True
    timing_cache: str = TIMING_CACHE_FILE


def plan_settings(
    manifest: EngineManifest, opt_batch: int | None = None, workspace_gib: float = DEFAULT_WORKSPACE_GIB
) -> dict[str, PlanSettings]:
    """The build settings of every graph of an engine (no TensorRT needed).

    Args:
        manifest: the ONNX engine's manifest.
        opt_batch: the image batch TensorRT tunes for (default: one pair, 2, capped by max_batch).
        workspace_gib: builder workspace limit.

    Raises:
        ConfigError: ``opt_batch`` outside ``[1, max_batch]`` or a non-positive workspace.
        EngineError: a graph has a dynamic axis this SDK does not know.
    """
    opt = opt_batch or min(2, manifest.max_batch)
    if not 1 <= opt <= manifest.max_batch:
        raise ConfigError(f"opt_batch must lie in [1, max_batch={manifest.max_batch}] (got {opt})")
    if not workspace_gib > 0:
        raise ConfigError(f"the TensorRT workspace must be positive (got {workspace_gib} GiB)")
    return {
        name: PlanSettings(
            graph=name,
            onnx=graph.onnx,
            plan=plan_file(name),
            profile=profile_shapes(graph.inputs, manifest.max_batch, opt),
            workspace_bytes=int(workspace_gib * (1 << 30)),
        )
        for name, graph in manifest.graphs.items()
    }


def plans_manifest(
    manifest: EngineManifest,
    settings: dict[str, PlanSettings],
    trt_version: str,
    compute_capability: str,
    device_name: str,
    files: dict[str, FileEntry],
) -> EngineManifest:
    """The manifest of the directory after the plans are built: ``engine: trt``, each graph's
    ``plan``, the ``tensorrt`` section (version, GPU, profiles) and the new file hashes."""
    graphs = {name: replace(graph, plan=settings[name].plan) for name, graph in manifest.graphs.items()}
    info = TensorRTInfo(
        trt_version,
        compute_capability,
        device_name,
        all(s.strongly_typed for s in settings.values()),
        {name: s.profile for name, s in settings.items()},
    )
    return replace(
        manifest,
        engine=str(EngineKind.TRT),
        graphs=graphs,
        files=files,
        libraries={**manifest.libraries, "tensorrt": trt_version},
        tensorrt=info,
    )


def build_plan(engine_dir: str | os.PathLike, settings: PlanSettings, trt: Any = None) -> None:
    """Build one plan with TensorRT (10+ API, unverified here) and update the timing cache.

    Raises:
        BackendUnavailableError: no TensorRT. EngineError: parsing or building failed.
    """
    trt = trt or import_tensorrt()
    engine_dir = Path(engine_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if settings.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(engine_dir / settings.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {settings.onnx!r}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    optimization_profile = builder.create_optimization_profile()
    for name, shapes in settings.profile.items():
        optimization_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization_profile)
    cache_path = engine_dir / settings.timing_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build a plan from {settings.onnx!r} (see the TensorRT log above)")
    (engine_dir / settings.plan).write_bytes(memoryview(serialized))
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))


def add_tensorrt_plans(
    engine_dir: str | Path,
    opt_batch: int | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    log: Callable[..., None] = print,
    trt: Any = None,
) -> EngineManifest:
    """Build TensorRT plans for every graph of an ONNX engine directory, on this GPU.

    The ONNX graphs stay, so the directory also runs with ONNX Runtime. Use it to export
    anywhere and build the plans on the deployment GPU
    (``sd4match-export --out DIR --engine trt --plans-only``).

    Args:
        engine_dir: an engine directory written by ``export_engine``.
        opt_batch: the image batch TensorRT tunes for (default: one pair, capped by max_batch).
        workspace_gib: builder workspace limit.
        log: a ``print``-like function for progress lines.
        trt: the ``tensorrt`` module (imported when ``None``).

    Raises:
        BackendUnavailableError: no TensorRT 10+ or no GPU. EngineError: bad manifest or files,
        or a failed build. ConfigError: a bad ``opt_batch``.
    """
    # 1. Check the machine and the ONNX engine
    out = Path(engine_dir)
    trt = trt or import_tensorrt()
    compute_capability, device_name = cuda_compute_capability()
    manifest = read_manifest(out)
    for name in manifest.graphs:  # the .onnx files, their external data and their interface
        checked_onnx_graph(out, manifest, name)
    # 2. Build one plan per graph
    settings = plan_settings(manifest, opt_batch, workspace_gib)
    for graph in settings.values():
        log(f"building {graph.plan} with TensorRT {trt.__version__} (compute capability {compute_capability}) ...")
        build_plan(out, graph, trt)
    # 3. Write the manifest that lists them (the engine's files, the plans and the timing cache)
    written = [*manifest.files, *(graph.plan for graph in settings.values()), TIMING_CACHE_FILE]
    files = hash_files(out, [name for name in written if (out / name).is_file()])
    manifest = plans_manifest(manifest, settings, str(trt.__version__), compute_capability, device_name, files)
    write_manifest(out, manifest)
    log(f"wrote {out / MANIFEST_FILE} (TensorRT plans)")
    return manifest
