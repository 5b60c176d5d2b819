"""CPU float32 rates of the UNet's 3x3 convolutions: oneDNN (what torch uses) against NNPACK's
Winograd path (PyTorch's one CPU convolution with fewer multiplies), beside a float32 matrix product.

The question it answers (docs/performance.md, "CPU bound, measured"): can a float32 CPU path do
the same convolutions with less arithmetic through a library PyTorch already ships? Effective
GFLOP/s counts the direct convolution's 2 * N * C_in * C_out * 9 * H * W for both, so a Winograd
path above oneDNN's rate would be a real gain.

    python benchmarks/bench_cpu_convs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, matmul_tflops, time_call  # noqa: E402

#: (channels, side) of the SD 2.1 UNet's 3x3 convolutions at 384 px, batch E=8.
SHAPES = ((1280, 12), (640, 24), (320, 48))


def main() -> None:
    cpu = torch.device("cpu")
    print(f"# machine: {machine(cpu)}; NNPACK available: {torch._nnpack_available()}")
    print(f"# float32 4096^3 matmul: {1e3 * matmul_tflops(cpu):.0f} GFLOP/s")
    print(f"{'conv 3x3, batch 8':<22} {'oneDNN':>8} {'oneDNN NHWC':>12} {'NNPACK':>8} {'NNPACK rel. err':>16}")
    for channels, side in SHAPES:
        x = torch.randn(8, channels, side, side)
        w = torch.randn(channels, channels, 3, 3)
        flop = 2 * 8 * channels * channels * 9 * side * side
        rate = lambda fn: flop / time_call(fn, cpu, repeats=3)["median_s"] / 1e9  # noqa: E731
        nchw = rate(lambda: F.conv2d(x, w, padding=1))
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        nhwc = rate(lambda: F.conv2d(x_nhwc, w, padding=1))
        if torch._nnpack_available():
            nnpack = rate(lambda: torch._nnpack_spatial_convolution(x, w, None, [1, 1]))
            ref = F.conv2d(x, w, padding=1)
            err = ((torch._nnpack_spatial_convolution(x, w, None, [1, 1]) - ref).abs().max() / ref.abs().max()).item()
            tail = f"{nnpack:>8.0f} {err:>16.1e}"
        else:
            tail = f"{'-':>8} {'-':>16}"
        print(f"{f'{channels} ch, {side}x{side}':<22} {nchw:>8.0f} {nhwc:>12.0f} {tail}")
    print("(effective GFLOP/s: the direct convolution's FLOPs over the time)")


if __name__ == "__main__":
    main()
