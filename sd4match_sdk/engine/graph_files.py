"""What an engine's ``.onnx`` files really contain, checked before a runtime opens them (docs/design.md §13.15).

A runtime loads more than the manifest says: an ``.onnx`` file names its own external-data
files, and its inputs and outputs are what the runtime will be fed. :func:`checked_onnx_graph`
verifies a graph's ``.onnx`` against the manifest, reads it with ``onnx.load(...,
load_external_data=False)`` (the weights stay on disk), collects the external-data files each
tensor references, checks that those stay inside the directory, are listed in the manifest and
match their sha256, and compares the graph's real inputs and outputs with the manifest's. A
manifest that drops a graph's data entry, or whose ``ensemble`` was edited, is refused here
rather than inside ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EngineError
from .directory import verify_files
from .manifest import EngineManifest, TensorSpec
from .schema import TensorTuple, check_relative_path, compare_graph_io

__all__ = ["OnnxGraphInfo", "checked_onnx_graph", "read_onnx_graph", "spec_tuples"]


@dataclass(frozen=True)
class OnnxGraphInfo:
    """The interface of an ``.onnx`` file and the external-data files it references.

    Attributes:
        inputs, outputs: ``(name, numpy dtype, shape)``; a shape entry is an int, a named
            dynamic axis (str) or ``None`` (an unnamed one).
        external_data: the ``location`` of every externally stored tensor, as written in the file
            (relative to the file's folder), without repeats.
    """

    inputs: tuple[TensorTuple, ...]
    outputs: tuple[TensorTuple, ...]
    external_data: tuple[str, ...]


def spec_tuples(specs: tuple[TensorSpec, ...]) -> tuple[TensorTuple, ...]:
    """The manifest's tensor specs as ``(name, dtype, shape)``."""
    return tuple((s.name, s.dtype, tuple(s.shape)) for s in specs)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse initializers and node attributes, recursively."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [attr.sparse_tensor] * attr.HasField("sparse_tensor") + list(attr.sparse_tensors):
            yield from (sparse.values, sparse.indices)
        for sub in [attr.g] * attr.HasField("g") + list(attr.graphs):
            yield from _graph_tensors(sub)


def _external_locations(model: Any) -> tuple[str, ...]:
    """Locations of the external data of every tensor (onnx's own iterator skips sparse tensors and functions)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    tensors = [*_graph_tensors(model.graph), *(t for f in model.functions for n in f.node for t in _node_tensors(n))]
    locations = [ExternalDataInfo(t).location for t in tensors if uses_external_data(t)]
    return tuple(dict.fromkeys(locations))


def _value_tuple(value: Any) -> TensorTuple:
    from onnx import helper

    ttype = value.type.tensor_type
    dims = tuple(d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else None) for d in ttype.shape.dim)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = f"onnx-type-{ttype.elem_type}"
    return value.name, dtype, dims


def read_onnx_graph(path: str | Path) -> OnnxGraphInfo:
    """The inputs, outputs and external-data locations of an ``.onnx`` file (weights not read).

    Raises:
        EngineError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors
        raise EngineError(f"engine file {str(path)!r} is not a readable ONNX model ({type(err).__name__}: {err}); re-export the engine") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_value_tuple(v) for v in model.graph.input if v.name not in initializers)
    return OnnxGraphInfo(inputs, tuple(_value_tuple(v) for v in model.graph.output), _external_locations(model))


def checked_onnx_graph(engine_dir: Path, manifest: EngineManifest, graph: str) -> OnnxGraphInfo:
    """Verify a graph's ``.onnx`` and every external-data file it references, and its interface.

    Raises:
        EngineError: a file outside the directory, unlisted, or differing from the manifest; an
            external-data location that leaves the directory; inputs or outputs that differ from
            the manifest (each message names the file).
    """
    entry = manifest.graphs[graph]
    verify_files(engine_dir, manifest, [entry.onnx])
    path = engine_dir / entry.onnx
    info = read_onnx_graph(path)
    folder = PurePosixPath(entry.onnx).parent
    data_files = []
    for location in info.external_data:
        try:
            data_files.append(check_relative_path((folder / location).as_posix() if str(folder) != "." else location, "external_data"))
        except EngineError:
            raise EngineError(
                f"engine file {str(path)!r} references external data {location!r}, which leaves the engine directory; "
                "refusing to load it: re-export the engine with sd4match-export"
            ) from None
    verify_files(engine_dir, manifest, data_files)  # also refuses data the manifest does not list
    try:
        compare_graph_io(graph, spec_tuples(entry.inputs), info.inputs, "inputs")
        compare_graph_io(graph, spec_tuples(entry.outputs), info.outputs, "outputs")
    except EngineError as err:
        raise EngineError(f"engine file {str(path)!r}: {err}") from None
    return info
