"""TensorRT runners: deserialized plans executed on torch CUDA tensors (TensorRT 10+ API).

Each graph's plan is deserialized once (``Runtime.deserialize_cuda_engine``) with one execution
context. A call sets the input shapes (``set_input_shape``), binds torch CUDA tensors by address
(``set_tensor_address``), allocates outputs with the shapes the context infers, enqueues
``execute_async_v3`` on torch's current stream and waits for it. Before any plan is opened, the
manifest's GPU compute capability and TensorRT version are compared with this machine's
(:func:`~sd4match_sdk.engine.directory.check_plan_compatibility`).

Not verified in this project's CI (no GPU, and PyPI's ``tensorrt`` is a stub there); see
``docs/export.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, EngineError
from ..runtimes import cuda_compute_capability, import_tensorrt
from .directory import check_plan_compatibility, verify_files
from .graph_files import spec_tuples
from .manifest import EngineManifest, GraphEntry
from .schema import compare_graph_io

__all__ = ["TensorRTRunner", "tensorrt_runners", "torch_dtype"]


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (the ones our graphs use)."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64}
    if dtype not in table:
        raise EngineError(f"unsupported TensorRT I/O dtype {dtype}")
    return table[dtype]


@contextlib.contextmanager
def _engine_errors(path: Path, action: str) -> Iterator[None]:
    """TensorRT's (and CUDA's) errors at this boundary as an EngineError naming the plan."""
    try:
        yield
    except (EngineError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - TensorRT's bindings raise RuntimeError/TypeError/its own types
        raise EngineError(
            f"TensorRT could not {action} {str(path)!r} ({type(err).__name__}: {err}); rebuild the plans on this "
            "machine with sd4match-export --engine trt --plans-only"
        ) from None


class TensorRTRunner:
    """One TensorRT plan with an execution context on a CUDA device.

    Args:
        plan: the ``.plan`` file.
        device: the CUDA device it runs on.
        trt: the ``tensorrt`` module.
        graph: its manifest entry; the plan's inputs and outputs must match it.

    Raises:
        EngineError: TensorRT cannot deserialize the plan, or its interface differs from ``graph``.
    """

    def __init__(self, plan: str | Path, device: torch.device, trt: Any, graph: GraphEntry | None = None) -> None:
        self.trt = trt
        self.device = device
        self.plan = Path(plan)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(device), _engine_errors(self.plan, "deserialize"):
            self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
            if self.engine is None:
                raise EngineError(
                    f"TensorRT could not deserialize {str(plan)!r}; rebuild it with sd4match-export --engine trt"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if graph is not None:
            self._check_interface(graph)

    def _check_interface(self, graph: GraphEntry) -> None:
        """The plan's inputs and outputs against the manifest (-1 is a dynamic axis)."""

        def tuples(names: list[str]) -> list:
            dtypes = [str(torch_dtype(self.trt, self.engine.get_tensor_dtype(n))).removeprefix("torch.") for n in names]
            return [(n, d, tuple(self.engine.get_tensor_shape(n))) for n, d in zip(names, dtypes)]

        try:
            compare_graph_io(self.plan.stem, spec_tuples(graph.inputs), tuples(self.inputs), "inputs")
            compare_graph_io(self.plan.stem, spec_tuples(graph.outputs), tuples(self.outputs), "outputs")
        except EngineError as err:
            raise EngineError(f"TensorRT plan {str(self.plan)!r}: {err}") from None

    def run(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        engine, context = self.engine, self.context
        bound = {}
        for name in self.inputs:
            tensor = feeds[name].to(self.device, torch_dtype(self.trt, engine.get_tensor_dtype(name))).contiguous()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            bound[name] = tensor  # keep alive until the stream is done
        results = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch_dtype(self.trt, engine.get_tensor_dtype(name)), device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream(self.device)
        with _engine_errors(self.plan, "run"):
            ok = context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
        if not ok:
            raise EngineError(f"TensorRT failed to run {str(self.plan)!r} (see the TensorRT log); rebuild it with sd4match-export --engine trt")
        return results


def tensorrt_runners(engine_dir: Path, manifest: EngineManifest, device: torch.device) -> dict[str, TensorRTRunner]:
    """Check compatibility and the plan files, then deserialize every plan.

    Raises:
        BackendUnavailableError: no TensorRT 10+ or no CUDA device.
        EngineError: plans for another GPU or TensorRT version, or files that differ from the manifest.
    """
    trt = import_tensorrt()
    if device.type != "cuda":
        raise BackendUnavailableError(
            "TensorRT plans run on a CUDA device: pass device='cuda', or engine_runtime='onnxruntime' for the CPU"
        )
    compute_capability, _ = cuda_compute_capability(device)
    check_plan_compatibility(manifest.tensorrt, compute_capability, str(trt.__version__))
    verify_files(engine_dir, manifest, [g.plan for g in manifest.graphs.values() if g.plan])
    return {name: TensorRTRunner(engine_dir / graph.plan, device, trt, graph) for name, graph in manifest.graphs.items()}  # type: ignore[operator]
