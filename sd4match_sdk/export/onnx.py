"""Export one graph module to ONNX and describe its inputs and outputs for the manifest.

Graphs are exported with ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript), the
exporter PyTorch maintains, with named dynamic axes. Graphs whose weights exceed the threshold
(2 GiB by default, the protobuf limit) keep their weights in ``<graph>.onnx.data`` next to the
``.onnx`` file; ONNX Runtime and TensorRT's parser find it through the relative path stored in
the graph, so the directory can be moved as a whole.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.format import onnx_data_file
from ..engine.manifest import TensorSpec
from ..errors import BackendUnavailableError, EngineError
from .config import EXTERNAL_DATA_THRESHOLD

__all__ = ["ExportedGraph", "export_onnx_graph", "read_tensor_specs"]


@dataclass(frozen=True)
class ExportedGraph:
    """Files and tensors of one exported graph.

    Attributes:
        onnx: the ``.onnx`` file.
        onnx_data: its external weights file, if any.
        inputs, outputs: specs read back from the written file.
    """

    onnx: Path
    onnx_data: Path | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (e.g. "torchvision is not installed") for one export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _dynamic_shapes(module: nn.Module, dynamic: dict[str, dict[int, str]]) -> dict[str, Any]:
    """``{input: {axis: name}}`` -> ``torch.export`` dynamic shapes keyed by ``forward``'s arguments.

    Axes with the same name share one ``Dim``, so the exporter knows e.g. that ``latents`` and
    ``noise`` have the same batch.
    """
    params = list(inspect.signature(module.forward).parameters)
    dims: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    for arg in params:
        axes = dynamic.get(arg, {})
        shapes[arg] = {
            axis: dims.setdefault(name, torch.export.Dim(name, min=1)) for axis, name in axes.items()
        } or None
    return shapes


def read_tensor_specs(
    path: str | Path, descriptions: dict[str, str] | None = None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX file (names, numpy dtypes, shapes; strings are dynamic axes)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    descriptions = descriptions or {}

    def spec(value: Any) -> TensorSpec:
        ttype = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in ttype.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        return TensorSpec(value.name, dtype, dims, descriptions.get(value.name, ""))

    return tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)


def _rename_output_axes(path: Path, outputs: dict[str, dict[int, str]]) -> None:
    """Give the outputs' dynamic axes the input axis names (the exporter may invent its own)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for value in model.graph.output:
        for axis, name in outputs.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param != name:
                dim.dim_param = name
                changed = True
    if changed:
        onnx.save(model, str(path))  # initializers keep their external-data references


def export_onnx_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: str | Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
    descriptions: dict[str, str] | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> ExportedGraph:
    """Export ``module`` to ``path`` (``<name>.onnx`` plus ``<name>.onnx.data`` if it is large).

    Args:
        module: an export-shaped module whose ``forward`` arguments are named as ``input_names``.
        args: example inputs; dynamic axes must not be 1 in them (``torch.export`` specialises 1).
        path: the ``.onnx`` file to write.
        input_names, output_names: tensor names in the graph.
        dynamic: ``{tensor name: {axis: dim name}}`` for inputs and outputs.
        opset: ONNX opset.
        descriptions: per-tensor descriptions for the manifest.
        external_data_threshold: store weights externally above this many bytes.

    Raises:
        EngineError: the exporter failed.
    """
    path = Path(path)
    if importlib.util.find_spec("onnxscript") is None:
        raise BackendUnavailableError("exporting needs onnxscript (torch.onnx's exporter): pip install onnxscript")
    module = module.eval()
    if list(inspect.signature(module.forward).parameters) != list(input_names):
        raise EngineError(f"internal: {type(module).__name__}.forward arguments differ from {input_names}")
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                module,
                args,
                None,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=_dynamic_shapes(module, dynamic),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; say which graph failed
        raise EngineError(f"ONNX export of {path.name} failed: {type(err).__name__}: {err}") from err
    weight_bytes = sum(
        int(v.const_value.nbytes) for v in program.model.graph.initializers.values() if v.const_value is not None
    )
    external = weight_bytes > external_data_threshold
    data_path = path.with_name(onnx_data_file(path.name.removesuffix(".onnx")))
    for stale in (path, data_path):
        stale.unlink(missing_ok=True)
    program.save(str(path), external_data=external)
    if external and not data_path.is_file():
        raise EngineError(f"internal: expected the external weights of {path.name} in {data_path.name}")
    _rename_output_axes(path, {k: v for k, v in dynamic.items() if k in output_names})
    inputs, outputs = read_tensor_specs(path, descriptions)
    return ExportedGraph(path, data_path if external else None, inputs, outputs)
