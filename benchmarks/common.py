"""Shared helpers for benchmarks: timing with warmup, medians and IQR, machine metadata."""

from __future__ import annotations

import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
    """The CPU's model name and its vector extensions that matter for inference speed (Linux: /proc/cpuinfo).

    ONNX Runtime's and PyTorch's CPU kernels pick code paths by these (AVX2, AVX-512, AMX), so a
    ratio between them holds for one CPU only.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {key.strip(): value for key, value in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    name = " ".join(fields.get("model name", platform.machine()).split())
    flags = set(fields.get("flags", "").split())
    extensions = [e for e, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile")) if flag in flags]
    return name + (f" ({', '.join(extensions)})" if extensions else "")


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU model otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def machine(device: torch.device) -> str:
    """A one-line description of where the numbers were taken (the CPU model for CPU figures)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a device's headline rows: bfloat16 on CUDA (the float16 rows run on the same tensor
    cores at the same rate), float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_tflops(device: torch.device, size: int | None = None, repeats: int | None = None) -> float:
    """Measured ``size^3`` matrix-product rate on random data in :func:`matmul_dtype`, the compute ceiling.

    Defaults: 8192^3, 10 products on CUDA (timed with CUDA events); 4096^3, 3 products on the CPU
    (wall time; large enough for oneDNN to reach its steady rate on a few cores, small enough to
    take seconds).
    """
    size = size or (8192 if device.type == "cuda" else 4096)
    repeats = repeats or (10 if device.type == "cuda" else 3)
    a = torch.randn(size, size, device=device, dtype=matmul_dtype(device))
    b = torch.randn(size, size, device=device, dtype=matmul_dtype(device))
    for _ in range(3 if device.type == "cuda" else 1):
        a @ b
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def relative_error(out: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest absolute error of ``out`` over the largest magnitude of the float64 result ``exact``."""
    return ((out.double() - exact).abs().max() / exact.abs().max()).item()


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def counted_tflop(fn: Callable[[], object]) -> float:
    """TFLOPs of ``fn`` by torch's FLOP counter (convolutions, matrix products, attention).

    The counter has formulas for the CUDA attention kernels only; the CPU's fused attention
    (``_scaled_dot_product_flash_attention_for_cpu``) would count 0, so it gets the same formula here.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_attention: _cpu_sdpa_flop}) as counter:
        fn()
    return counter.get_total_flops() / 1e12


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_during(fn: Callable[[], object], interval_s: float = 0.01) -> int:
    """Bytes of resident memory ``fn`` adds at its peak: the highest RSS sampled while it runs
    (a thread reads /proc/self/status every ``interval_s``) minus the RSS before. Linux only (0 elsewhere)."""
    if not Path("/proc/self/status").exists():
        fn()
        return 0
    before, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_bytes()) - before
