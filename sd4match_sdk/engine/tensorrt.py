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

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, EngineError
from ..runtimes import cuda_compute_capability, import_tensorrt
from .directory import check_plan_compatibility, verify_files
from .manifest import EngineManifest

__all__ = ["TensorRTRunner", "tensorrt_runners", "torch_dtype"]


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (the ones our graphs use)."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64}
    if dtype not in table:
        raise EngineError(f"unsupported TensorRT I/O dtype {dtype}")
    return table[dtype]


class TensorRTRunner:
    """One TensorRT plan with an execution context on a CUDA device.

    Args:
        plan: the ``.plan`` file.
        device: the CUDA device it runs on.
        trt: the ``tensorrt`` module.
    """

    def __init__(self, plan: str | Path, device: torch.device, trt: Any) -> None:
        self.trt = trt
        self.device = device
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(device):
            self.engine = self.runtime.deserialize_cuda_engine(Path(plan).read_bytes())
            if self.engine is None:
                raise EngineError(
                    f"TensorRT could not deserialize {str(plan)!r}; rebuild it with sd4match-export --engine trt"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

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
        if not context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed (see the TensorRT log)")
        stream.synchronize()
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
    return {name: TensorRTRunner(engine_dir / graph.plan, device, trt) for name, graph in manifest.graphs.items()}  # type: ignore[operator]
