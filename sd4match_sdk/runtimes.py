"""The optional runtimes (ONNX Runtime, TensorRT) and the CUDA device they need, imported on use.

``import sd4match_sdk`` never imports onnxruntime or TensorRT: the exporter and the engine
runtime call these functions when they need one, and a missing or unusable runtime becomes a
:class:`~sd4match_sdk.errors.BackendUnavailableError` that says what to install.
"""

from __future__ import annotations

from typing import Any

from .errors import BackendUnavailableError, ConfigError

__all__ = ["MIN_TENSORRT_MAJOR", "cuda_compute_capability", "import_onnxruntime", "import_tensorrt", "resolve_device"]


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module.

    Raises:
        BackendUnavailableError: onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailableError(
            f"onnxruntime is not installed ({err}); pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)"
        ) from None
    return onnxruntime


#: The oldest TensorRT whose Python API (``execute_async_v3``, strongly typed networks) we use.
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


def resolve_device(device: Any = "auto") -> Any:
    """A ``torch.device``: ``"auto"`` is CUDA when torch sees a GPU, else the CPU (every command's
    default ``--device``).

    Raises:
        ConfigError: a CUDA device asked for, but torch sees none.
    """
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but CUDA is not available; use --device cpu (or auto)")
    return resolved
