"""ONNX Runtime runners: the CUDA execution provider when installed and asked for, else the CPU."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import EngineError
from ..runtimes import import_onnxruntime
from .format import GraphName
from .graph_files import checked_onnx_graph
from .manifest import EngineManifest

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
    """

    def __init__(self, path: str | Path, providers: list[Any], outputs: list[str] | None = None) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the CPU fallback of shape nodes is expected
        with _engine_errors(self.path, "open"):
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.outputs = outputs or [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        arrays = {k: v.detach().cpu().numpy() for k, v in feeds.items()}
        with _engine_errors(self.path, "run"):
            results = self.session.run(self.outputs, arrays)
        return {name: torch.from_numpy(r) for name, r in zip(self.outputs, results)}


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
        name: OnnxRuntimeRunner(engine_dir / graph.onnx, providers, ["features"] if name == GraphName.UNET else None)
        for name, graph in manifest.graphs.items()
    }
