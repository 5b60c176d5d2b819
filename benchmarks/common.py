"""Shared helpers for benchmarks: timing with warmup, medians and IQR, machine metadata."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median and inter-quartile range of ``fn``'s wall time in seconds (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "runs": len(times)}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, as ``lscpu`` shows it), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU model otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def machine(device: torch.device) -> str:
    """A one-line description of where the numbers were taken."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def bf16_matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 ``size^3`` matrix-product rate on random data (CUDA events), the compute ceiling."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12
