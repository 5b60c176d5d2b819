"""Fused Kernel-Soft-Argmax kernel vs the torch reference, side by side in one run.

Four problems, as SD4Match meets them: sparse (N=20 queries) and dense (every source cell a
query) at C=1280 on a 48x48 grid (768 px) and at C=640 on a 96x96 grid. For each: median time of
the kernel (``sd4match_sdk.kernels.fused_kernel_soft_argmax``) and of the torch reference
(``sd4match_sdk.ops.matching.match_points``: grid_sample, float32 bmm, then separate softmax ops),
the speedup, the largest coordinate difference between the two, and the kernel's achieved
memory bandwidth and FLOP rate against the device's peak.

    python benchmarks/bench_kernel.py                               # CPU, float32, batch 1
    python benchmarks/bench_kernel.py --device cuda --dtype fp16 --batch 8

On CUDA a third column times the same torch ops with the similarity matmul in float16 on the
tensor cores ("torch fp16 mm"), the fastest torch can do with this sequence of ops.

Accounting: FLOPs count the correlation GEMM, 2*B*N*M*C (M target cells). The CUDA kernel computes
it twice (argmax pass, then softmax pass), so its executed rate is twice the useful one shown. The
byte count is the fewest bytes any implementation must move: both maps read once (for sparse
queries only the 4 corner cells per query of the source), points read and outputs written once.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def import_matching_modules():
    """``(kernel, matching, MatchConfig)`` from the SDK.

    A bare GPU box may lack the SDK's other dependencies (pillow, diffusers, ...), which the package
    ``__init__`` files import; the matching modules need only torch. If the normal import fails,
    the two package ``__init__`` files are skipped and only the matching modules are loaded.
    """
    try:
        import sd4match_sdk  # noqa: F401
    except ImportError as exc:
        print(f"note: `import sd4match_sdk` failed ({exc}); loading only the matching modules", file=sys.stderr)
        stub = types.ModuleType("sd4match_sdk")
        stub.__path__ = [str(ROOT / "sd4match_sdk")]
        sys.modules["sd4match_sdk"] = stub
    from sd4match_sdk import kernels as kernel
    from sd4match_sdk.config import MatchConfig
    from sd4match_sdk.ops import matching

    return kernel, matching, MatchConfig


kernel, matching, MatchConfig = import_matching_modules()

#: (memory TB/s, fp16 dense tensor TFLOP/s, fp32 FMA TFLOP/s) by device-name fragment (datasheets).
PEAKS = {
    "H200": (4.8, 989.0, 67.0),
    "H100 SXM": (3.35, 989.0, 67.0),
    "H100 80GB HBM3": (3.35, 989.0, 67.0),
    "H100 PCIe": (2.0, 756.0, 51.0),
    "H100 NVL": (3.9, 835.0, 60.0),
    "A100-SXM4-80GB": (2.04, 312.0, 19.5),
    "A100": (1.56, 312.0, 19.5),
    "L40S": (0.864, 362.0, 91.6),
}

PROBLEMS = [  # (name, channels, grid side, queries or None for dense)
    ("sparse 48x48 C=1280", 1280, 48, 20),
    ("dense  48x48 C=1280", 1280, 48, None),
    ("sparse 96x96 C=640", 640, 96, 20),
    ("dense  96x96 C=640", 640, 96, None),
]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"


def peaks(name: str) -> tuple[float, float, float] | None:
    for key, value in PEAKS.items():
        if key in name:
            return value
    return None


def timer(device: torch.device, fn, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs (device events on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_fp16_mm(featmap0, featmap1, points0, config):
    """The reference's ops with the similarity matmul in float16 (tensor cores), the rest float32."""
    desc = matching.l2_normalize(matching.sample_descriptors(featmap0.float(), points0.float()), dim=-1)
    target = matching.l2_normalize(featmap1.float(), dim=1)
    b, c, h1, w1 = target.shape
    sim = torch.bmm(desc.half(), target.reshape(b, c, h1 * w1).half()).float()
    return matching.kernel_soft_argmax(sim.reshape(b, -1, h1, w1), config.sigma, config.beta)


def make_inputs(batch: int, channels: int, side: int, queries: int | None, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, channels, side, side, generator=g).to(device=device, dtype=dtype)
    target = torch.randn(batch, channels, side, side, generator=g).to(device=device, dtype=dtype)
    if queries is None:
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        points = torch.stack([xs.flatten(), ys.flatten()], -1).float()[None].expand(batch, -1, -1).contiguous()
    else:
        points = torch.rand(batch, queries, 2, generator=g) * (side - 1)
    return source, target, points.to(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--batch", type=int, default=None, help="1 on CPU, 8 on CUDA by default")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch.get_num_threads())")
    parser.add_argument("--only", default="", help="substring filter on the problem names, e.g. 'dense'")
    parser.add_argument("--skip-reference", default="", help="substring filter: time no reference for these")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    batch = args.batch or (8 if device.type == "cuda" else 1)
    threads = args.threads or torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if not kernel.kernel_supports(device):
        raise SystemExit(f"no fused kernel is built for {device}; see docs/kernels.md")
    config = MatchConfig()
    name = device_name(device)
    peak = peaks(name) if device.type == "cuda" else None
    print(f"device: {name}")
    print(f"dtype {args.dtype}, batch {batch}, sigma {config.sigma}, beta {config.beta}" +
          (f", CPU threads {threads} (kernel and torch)" if device.type == "cpu" else ""))
    if peak:
        rate = peak[1] if dtype == torch.float16 else peak[2]
        print(f"peaks (datasheet): {peak[0]} TB/s memory, {rate} TFLOP/s "
              f"({'fp16 dense tensor core' if dtype == torch.float16 else 'fp32 FMA'})")
    print()
    head = f"{'problem':22} {'N':>6} {'kernel ms':>10} {'torch ms':>10} {'speedup':>8}"
    if device.type == "cuda":
        head += f" {'fp16-mm ms':>10} {'vs fp16mm':>9}"
    head += f" {'max |d| cells':>13} {'GB/s':>8} {'TFLOP/s':>8}"
    if peak:
        head += f" {'%BW':>5} {'%FLOP':>6}"
    print(head)

    for label, channels, side, queries in PROBLEMS:
        if args.only and args.only not in label:
            continue
        source, target, points = make_inputs(batch, channels, side, queries, dtype, device)
        n = points.shape[1]
        dense = queries is None
        reps = args.reps or (20 if device.type == "cuda" else (10 if not dense else 3))
        run_kernel = lambda: kernel.fused_kernel_soft_argmax(  # noqa: E731
            source, target, None if dense else points, config.sigma, config.beta, num_threads=threads
        )
        coords, _ = run_kernel()
        t_kernel = timer(device, run_kernel, reps)
        skip_ref = bool(args.skip_reference) and args.skip_reference in label
        if skip_ref:
            t_ref, diff = float("nan"), float("nan")
        else:
            run_ref = lambda: matching.match_points(source, target, points, config)  # noqa: E731
            ref_coords, _ = run_ref()
            diff = (coords.float() - ref_coords.float()).abs().max().item()
            del ref_coords
            t_ref = timer(device, run_ref, max(1, reps // (3 if dense and device.type == "cpu" else 1)))
        es = source.element_size()
        m = side * side
        source_bytes = batch * channels * m * es if dense else batch * min(m, 4 * n) * channels * es
        min_bytes = batch * channels * m * es + source_bytes + points.numel() * 4 * (not dense) + batch * n * 12
        flops = 2.0 * batch * n * m * channels
        line = f"{label:22} {n:6d} {t_kernel * 1e3:10.3f} {t_ref * 1e3:10.3f} {t_ref / t_kernel:7.2f}x"
        if device.type == "cuda":
            if skip_ref:
                line += f" {'':>10} {'':>9}"
            else:
                t16 = timer(device, lambda: torch_fp16_mm(source, target, points, config), reps)
                line += f" {t16 * 1e3:10.3f} {t16 / t_kernel:8.2f}x"
        gbs, tflops = min_bytes / t_kernel / 1e9, flops / t_kernel / 1e12
        line += f" {diff:13.2e} {gbs:8.1f} {tflops:8.2f}"
        if peak:
            rate = peak[1] if dtype == torch.float16 else peak[2]
            line += f" {100 * gbs / 1e3 / peak[0]:4.1f}% {100 * tflops / rate:5.1f}%"
        print(line, flush=True)
        del source, target, points, coords
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print("speedup = torch reference time / kernel time (medians, same inputs, same run).")
    print("TFLOP/s counts the useful GEMM (2*B*N*M*C); the CUDA kernel executes it twice (argmax pass, softmax pass).")
    print("max |d|: largest coordinate difference to the float32 reference; random features give flat softmaxes where")
    print("the float32 reference itself drifts by up to ~3e-4 cells (48x48) / ~3e-3 cells (96x96) from float64.")


if __name__ == "__main__":
    main()
