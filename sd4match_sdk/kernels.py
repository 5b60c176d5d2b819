"""The fused correlation + Kernel-Soft-Argmax kernel behind the reference's ``match_points`` signature.

The compiled modules (built from ``kernels/``, docs/kernels.md) compute, per query, exactly what
:func:`sd4match_sdk.ops.matching.match_points` computes for ``method="kernel_softargmax"``
(docs/design.md §5.3) without materialising the similarity map: ``sd4match_sdk._kernels`` on the CPU and
``sd4match_sdk._kernels_cuda`` on CUDA devices. This module is their Python face. Tensors cross into C++ as DLPack capsules (no
libtorch link); outputs are allocated here by torch, so CUDA work uses torch's caching allocator
and runs on torch's current stream.

The kernel covers Kernel-Soft-Argmax only. :func:`match_points` falls back to the torch reference
for the other methods and for devices without a built kernel; :func:`match_points_strict` raises
:class:`~sd4match_sdk.errors.BackendUnavailableError` instead. :func:`match_function` picks one of
the three for a :class:`~sd4match_sdk.config.MatchingBackend` (the Matcher's ``matching_backend``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from .config import MatchConfig, MatchingBackend, MatchMethod
from .errors import BackendUnavailableError, ConfigError, ShapeError
from .ops import matching

__all__ = [
    "MatchFn",
    "cpu_kernel_available",
    "cuda_kernel_available",
    "fused_kernel_soft_argmax",
    "kernel_supports",
    "match_function",
    "match_points",
    "match_points_strict",
]

#: The signature of every matching function: ``(featmap0 (B,C,H0,W0), featmap1 (B,C,H1,W1),
#: points0 (B,N,2) grid cells, config) -> (coords (B,N,2) grid cells, scores (B,N))``.
MatchFn = Callable[[Tensor, Tensor, Tensor, MatchConfig | None], tuple[Tensor, Tensor]]

_BUILD_HINT = (
    "build it with `pip install -e .` (or `python setup.py build_ext --inplace`) with a C++17 compiler; "
    "the CUDA part needs nvcc (SD4MATCH_CUDA=1 forces it, see docs/kernels.md)"
)


def _module(name: str) -> ModuleType | None:
    """The compiled module ``sd4match_sdk.<name>``, or ``None`` if it is not built or cannot load."""
    try:
        return importlib.import_module(f"sd4match_sdk.{name}")
    except ImportError:
        return None


def cpu_kernel_available() -> bool:
    """True when the CPU kernel module is built and imports."""
    return _module("_kernels") is not None


def cuda_kernel_available(device: torch.device | str | int | None = None) -> bool:
    """True when the CUDA kernel module is built and can run on ``device`` (the current CUDA
    device if ``None``): a driver recent enough and machine code or PTX for its architecture."""
    module = _module("_kernels_cuda")
    if module is None or not torch.cuda.is_available():
        return False
    index = device if isinstance(device, int) else (None if device is None else torch.device(device).index)
    ok, _ = module.check_device(torch.cuda.current_device() if index is None else index)
    return bool(ok)


def kernel_supports(device: torch.device | str) -> bool:
    """True when a built kernel can run on ``device``."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_kernel_available()
    if device.type == "cuda":
        return cuda_kernel_available(device)
    return False


def _capsule(t: Tensor):
    return torch.utils.dlpack.to_dlpack(t)


def _check_inputs(featmap0: Tensor, featmap1: Tensor, points0: Tensor | None) -> None:
    if featmap0.ndim != 4 or featmap1.ndim != 4:
        raise ShapeError(
            f"feature maps must be (B, C, H, W); got {tuple(featmap0.shape)} and {tuple(featmap1.shape)}",
            actual=tuple(featmap0.shape),
            expected="(B, C, H, W)",
        )
    if featmap0.shape[:2] != featmap1.shape[:2]:
        raise ShapeError(
            f"feature maps must share batch and channels; got {tuple(featmap0.shape)} and {tuple(featmap1.shape)}",
            actual=tuple(featmap1.shape),
            expected=f"({featmap0.shape[0]}, {featmap0.shape[1]}, H1, W1)",
        )
    if min(featmap0.shape[1:]) < 1 or min(featmap1.shape[2:]) < 1:
        raise ShapeError("feature maps need at least one channel and one cell", actual=tuple(featmap0.shape))
    if points0 is not None and (points0.ndim != 3 or points0.shape[0] != featmap0.shape[0] or points0.shape[2] != 2):
        raise ShapeError(
            f"points must be (B, N, 2) with B={featmap0.shape[0]}; got {tuple(points0.shape)}",
            actual=tuple(points0.shape),
            expected="(B, N, 2)",
        )
    devices = {featmap0.device, featmap1.device} | ({points0.device} if points0 is not None else set())
    if len(devices) != 1:
        raise ShapeError(f"feature maps and points must be on one device; got {sorted(map(str, devices))}")


def fused_kernel_soft_argmax(
    featmap0: Tensor,
    featmap1: Tensor,
    points0: Tensor | None = None,
    sigma: float = 7.0,
    beta: float = 0.04,
    num_threads: int = 0,
    fp32_math: bool = False,
) -> tuple[Tensor, Tensor]:
    """Fused cosine similarity + Kernel-Soft-Argmax on the compiled kernel.

    Args:
        featmap0: ``(B, C, H0, W0)`` raw source map, float32 or float16 (other dtypes are cast to
            float32); any strides.
        featmap1: ``(B, C, H1, W1)`` raw target map on the same device.
        points0: ``(B, N, 2)`` query ``(x, y)`` on the source grid (align-corners), or ``None`` for
            dense mode: every source cell in row-major order (``N = H0 * W0``).
        sigma: Gaussian width in cells.
        beta: softmax temperature.
        num_threads: CPU threads (``0``: all hardware threads); ignored on CUDA.
        fp32_math: CUDA with float16 maps: correlate with float32 FMA instead of the tensor cores
            (slower; the CPU always computes in float32).

    Returns:
        ``(B, N, 2)`` float32 expected ``(x, y)`` on the target grid and ``(B, N)`` float32 scores
        (peak probabilities).

    Raises:
        ShapeError: inconsistent shapes or devices.
        BackendUnavailableError: no kernel is built for the tensors' device.
    """
    _check_inputs(featmap0, featmap1, points0)
    device = featmap0.device
    module = _module("_kernels") if device.type == "cpu" else _module("_kernels_cuda") if device.type == "cuda" else None
    if module is None:
        raise BackendUnavailableError(f"no fused matching kernel is built for device {device}; {_BUILD_HINT}")
    featmap0, featmap1 = featmap0.detach(), featmap1.detach()
    if featmap0.dtype != featmap1.dtype or featmap0.dtype not in (torch.float32, torch.float16):
        featmap0, featmap1 = featmap0.float(), featmap1.float()
    b = featmap0.shape[0]
    n = featmap0.shape[2] * featmap0.shape[3] if points0 is None else points0.shape[1]
    coords = torch.empty((b, n, 2), dtype=torch.float32, device=device)
    scores = torch.empty((b, n), dtype=torch.float32, device=device)
    if b == 0 or n == 0:
        return coords, scores
    if points0 is not None:
        points0 = points0.detach().float()
    tensors = (featmap0, featmap1, points0, coords, scores)
    capsules = lambda: tuple(None if t is None else _capsule(t) for t in tensors)  # noqa: E731
    if device.type == "cpu":
        module.kernel_soft_argmax(*capsules(), float(sigma), float(beta), num_threads)
        return coords, scores
    with torch.cuda.device(device):
        # Scratch from torch's caching allocator, on torch's current stream.
        flags = module.FP32_MATH if fp32_math else 0
        nbytes = module.workspace_bytes(*capsules(), float(sigma), float(beta), flags)
        workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device).cuda_stream
        module.kernel_soft_argmax(*capsules(), float(sigma), float(beta), stream, workspace.data_ptr(), nbytes, flags)
    return coords, scores


def match_points(
    featmap0: Tensor, featmap1: Tensor, points0: Tensor, config: MatchConfig | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`sd4match_sdk.ops.matching.match_points` on the kernel where it applies.

    Kernel-Soft-Argmax on a device with a built kernel runs fused; every other method or device
    falls back to the torch reference (same results within float rounding).
    """
    config = config or MatchConfig()
    if config.method is not MatchMethod.KERNEL_SOFTARGMAX or not kernel_supports(featmap0.device):
        return matching.match_points(featmap0, featmap1, points0, config)
    return fused_kernel_soft_argmax(featmap0, featmap1, points0, config.sigma, config.beta)


def match_points_strict(
    featmap0: Tensor, featmap1: Tensor, points0: Tensor, config: MatchConfig | None = None
) -> tuple[Tensor, Tensor]:
    """As :func:`match_points`, but a device without a built kernel raises instead of falling back.

    Methods other than Kernel-Soft-Argmax still use the torch reference: the kernel implements
    only that method.
    """
    config = config or MatchConfig()
    if config.method is not MatchMethod.KERNEL_SOFTARGMAX:
        return matching.match_points(featmap0, featmap1, points0, config)
    return fused_kernel_soft_argmax(featmap0, featmap1, points0, config.sigma, config.beta)


def match_function(backend: str | MatchingBackend = MatchingBackend.AUTO) -> tuple[MatchFn, MatchingBackend]:
    """The matching function of a matching backend, and the backend it resolves to.

    ``torch`` is the reference; ``kernel`` needs the compiled module (it raises at match time
    for a device without a built kernel); ``auto`` takes the kernel when the module is built and
    falls back to torch per call (other devices). Either way, methods other than
    Kernel-Soft-Argmax run on torch.

    Raises:
        ConfigError: an unknown backend name.
        BackendUnavailableError: ``kernel`` asked for, but the kernel is not built.
    """
    try:
        backend = MatchingBackend(backend)
    except ValueError:
        known = ", ".join(b.value for b in MatchingBackend)
        raise ConfigError(f"unknown matching_backend {backend!r}; choose one of: {known}") from None
    if backend is MatchingBackend.TORCH:
        return matching.match_points, MatchingBackend.TORCH
    if backend is MatchingBackend.KERNEL:
        if not cpu_kernel_available():
            raise BackendUnavailableError(
                "the fused matching kernel is not built in this installation; rebuild with `pip install -e .` "
                "and a C++17 compiler (see docs/kernels.md), or use matching_backend='torch'"
            )
        return match_points_strict, MatchingBackend.KERNEL
    if cpu_kernel_available():
        return match_points, MatchingBackend.KERNEL
    return matching.match_points, MatchingBackend.TORCH
