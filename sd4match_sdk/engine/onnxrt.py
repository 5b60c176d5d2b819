"""ONNX Runtime runners: the CUDA execution provider when installed and asked for, else the CPU.

With the CUDA provider the runner binds torch CUDA tensors to the session by address (ONNX
Runtime's I/O binding): inputs are read where torch wrote them, outputs are written into torch
tensors allocated on the device with the shapes the manifest declares, so features stay on the
GPU from the VAE graph to the matcher (docs/design.md §13.23). Without it, feeds go through host
numpy arrays.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import EngineError
from ..runtimes import import_onnxruntime
from .format import GraphName
from .graph_files import checked_onnx_graph
from .manifest import EngineManifest, GraphEntry

#: Manifest dtype names -> numpy and torch dtypes of bound tensors.
_NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64}
_TORCH = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}

__all__ = ["OnnxRuntimeRunner", "onnxruntime_runners", "select_providers"]


def select_providers(device: torch.device, available: list[str]) -> list[Any]:
    """Execution providers for ``device``: CUDA (then CPU as fallback for unsupported nodes) or CPU.

    A CUDA device without ``CUDAExecutionProvider`` (the CPU-only ``onnxruntime`` wheel) falls back
    to the CPU with a warning that says what to install.
    """
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        warnings.warn(
            "device='cuda' but this onnxruntime has no CUDAExecutionProvider; running the engine on the CPU. "
            "Install onnxruntime-gpu for the CUDA provider.",
            stacklevel=3,
        )
    return ["CPUExecutionProvider"]


@contextlib.contextmanager
def _engine_errors(path: Path, action: str) -> Iterator[None]:
    """ONNX Runtime's errors (its own types, all at this boundary) as an EngineError naming the file."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime raises Fail, InvalidArgument, RuntimeException, ...
        raise EngineError(
            f"ONNX Runtime could not {action} {str(path)!r} ({type(err).__name__}: {err}); the engine file does not "
            "match this SDK's graphs or inputs: re-export the engine with sd4match-export"
        ) from None


class OnnxRuntimeRunner:
    """One ONNX graph in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file (its ``.onnx.data`` is found next to it).
        providers: execution providers, in order of preference.
        outputs: the outputs to compute (others are skipped), default all.
        graph: the graph's manifest entry (its tensor specs shape the bound outputs).
        device: where bound tensors live (the CUDA device of the CUDA provider).
        io_binding: bind torch tensors by address instead of copying through numpy; default: when
            the session runs the CUDA provider and ``graph`` is given.
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[Any],
        outputs: list[str] | None = None,
        graph: GraphEntry | None = None,
        device: torch.device = torch.device("cpu"),
        io_binding: bool | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the CPU fallback of shape nodes is expected
        with _engine_errors(self.path, "open"):
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.outputs = outputs or [o.name for o in self.session.get_outputs()]
        self.graph = graph
        on_cuda = "CUDAExecutionProvider" in self.providers and device.type == "cuda"
        self.device = device if on_cuda else torch.device("cpu")
        self.io_binding = (on_cuda if io_binding is None else io_binding) and graph is not None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.io_binding:
            return self._run_bound(feeds)
        arrays = {k: v.detach().cpu().numpy() for k, v in feeds.items()}
        with _engine_errors(self.path, "run"):
            results = self.session.run(self.outputs, arrays)
        return {name: torch.from_numpy(r) for name, r in zip(self.outputs, results)}

    def _run_bound(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run with I/O binding: torch tensors on :attr:`device` in, torch tensors on it out."""
        # 1. inputs, by address (kept alive in `bound` until the run returns)
        binding = self.session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        bound, sizes = {}, {}
        for spec in self.graph.inputs:  # type: ignore[union-attr]
            tensor = feeds[spec.name].detach().to(self.device, _TORCH[spec.dtype]).contiguous()
            sizes.update({axis: tensor.shape[i] for i, axis in spec.dynamic_axes.items()})
            binding.bind_input(spec.name, kind, index, _NUMPY[spec.dtype], tuple(tensor.shape), tensor.data_ptr())
            bound[spec.name] = tensor
        # 2. outputs: torch tensors of the manifest's shapes that ONNX Runtime writes into
        results = {}
        for spec in self.graph.outputs:  # type: ignore[union-attr]
            if spec.name in self.outputs:
                out = torch.empty(spec.concrete(sizes), dtype=_TORCH[spec.dtype], device=self.device)
                binding.bind_output(spec.name, kind, index, _NUMPY[spec.dtype], tuple(out.shape), out.data_ptr())
                results[spec.name] = out
        # 3. run after torch's queued work has written the inputs; wait for the outputs
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        with _engine_errors(self.path, "run"):
            self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return results


def onnxruntime_runners(engine_dir: Path, manifest: EngineManifest, device: torch.device) -> dict[str, OnnxRuntimeRunner]:
    """Check the ONNX files against the manifest and open one session per graph.

    Raises:
        EngineError: a file is missing, outside the directory or differs from the manifest; a
            graph's inputs/outputs differ from the manifest; ONNX Runtime cannot open a graph.
        BackendUnavailableError: onnxruntime is not installed.
    """
    ort = import_onnxruntime()
    for name in manifest.graphs:  # the .onnx, every external-data file it references, its interface
        checked_onnx_graph(engine_dir, manifest, name)
    providers = select_providers(device, ort.get_available_providers())
    return {
        name: OnnxRuntimeRunner(
            engine_dir / graph.onnx, providers, ["features"] if name == GraphName.UNET else None, graph, device
        )
        for name, graph in manifest.graphs.items()
    }
