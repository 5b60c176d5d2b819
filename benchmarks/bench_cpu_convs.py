"""CPU float32 rates of the UNet's 3x3 convolutions: oneDNN (what torch uses) against NNPACK's
Winograd path (PyTorch's one CPU convolution with fewer multiplies), beside a float32 matrix product.

The question it answers (docs/performance.md, "CPU bound, measured"): can a float32 CPU path do
the same convolutions with less arithmetic through a library PyTorch already ships? Effective
GFLOP/s counts the direct convolution's 2 * N * C_in * C_out * 9 * H * W for both, so a Winograd
path above oneDNN's rate would be a real gain. A second table asks the same of oneDNN's own
reduced-precision float32 modes (``torch.backends.mkldnn.{matmul,conv}.fp32_precision``: ``tf32``,
``bf16``), with their error against float64: float32 tensors in and out, less precise products inside.

    python benchmarks/bench_cpu_convs.py
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, matmul_tflops, relative_error, time_call  # noqa: E402

#: (channels, side) of the SD 2.1 UNet's 3x3 convolutions at 384 px, batch E=8.
SHAPES = ((1280, 12), (640, 24), (320, 48))


@contextlib.contextmanager
def onednn_fp32_precision(mode: str):
    """oneDNN's float32 math mode for matmuls and convolutions inside the block (restored after)."""
    backends = (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)
    saved = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = mode
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


def precision_modes(cpu: torch.device) -> None:
    """The second table: each oneDNN float32 mode's rate and error on a matmul and a convolution."""
    if not hasattr(torch.backends.mkldnn.matmul, "fp32_precision"):
        print("# this torch has no torch.backends.mkldnn.*.fp32_precision")
        return
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    x, w = torch.randn(8, 640, 24, 24), torch.randn(640, 640, 3, 3) / 76  # ~unit outputs
    exact_mm, exact_conv = a.double() @ b.double(), F.conv2d(x.double(), w.double(), padding=1)
    mm_flop, conv_flop = 2 * 4096**3, 2 * 8 * 640 * 640 * 9 * 24 * 24
    print(f"{'oneDNN fp32 mode':<22} {'matmul':>8} {'rel. err':>9} {'conv 640 ch':>12} {'rel. err':>9}")
    for mode in ("ieee", "tf32", "bf16"):
        with onednn_fp32_precision(mode):
            mm = mm_flop / time_call(lambda: a @ b, cpu, repeats=3)["median_s"] / 1e9
            conv = conv_flop / time_call(lambda: F.conv2d(x, w, padding=1), cpu, repeats=3)["median_s"] / 1e9
            errors = relative_error(a @ b, exact_mm), relative_error(F.conv2d(x, w, padding=1), exact_conv)
        print(f"{mode:<22} {mm:>8.0f} {errors[0]:>9.1e} {conv:>12.0f} {errors[1]:>9.1e}")
    print("(GFLOP/s; float32 tensors in and out in every mode)")


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
    print()
    precision_modes(cpu)


if __name__ == "__main__":
    main()
