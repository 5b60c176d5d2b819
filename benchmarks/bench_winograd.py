"""Winograd 3x3 convolutions on the CPU, shape by shape: what they gain, what they round, what they could give.

The float32 CPU path runs at the matrix-product rate already (docs/performance.md, "CPU bound"),
so only fewer multiplies make it faster: Winograd's F(m x m, 3 x 3) does a 3x3 convolution with
(m + 2)^2 multiplies per m x m output tile and channel pair instead of 9 m^2 (2.25x fewer for
m = 2, 4x for m = 4). The compiled CPU path runs F(4x4, 3x3) for wide convolutions
(``sd4match_sdk/models/winograd.py``, docs/design.md §13.24). This script prints:

1. for the SD 2.1 UNet's and VAE's largest 3x3 convolutions at 384 px (the UNet at E = 8, the VAE
   one image), the direct convolution (the faster of oneDNN's NCHW and channels-last), the
   Winograd matrix products alone (free transforms: an upper bound), the whole algorithm as the
   SDK writes it, compiled, and each one's float32 error against float64;
2. the share of one image's work (VAE + truncated UNet at E = 8) in 3x3 stride-1 convolutions,
   counted on ``meta`` tensors, and Amdahl's bound on the compiled row's speed-up over its direct
   convolutions if every such convolution ran at its shape's gain (shapes not timed: the best gain);
3. whether the matches stay within 0.01 px: the float32 SDK's matches on ``bench_pairs.py``'s
   pairs with every 3x3 convolution run by F(2x2, 3x3), then F(4x4, 3x3), against the direct ones
   (``--deviation-pairs 0`` skips it; with 2 pairs the whole script took about 5 minutes on 2 cores).

    python benchmarks/bench_winograd.py
"""

from __future__ import annotations

import argparse
import collections
import functools
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, relative_error, time_call  # noqa: E402

from sd4match_sdk.models.winograd import tile_transforms, transform_filters, use_winograd, winograd_conv3x3  # noqa: E402

#: (batch, C_in, C_out, side) of the largest 3x3 stride-1 convolutions at 384 px, largest first.
SHAPES = (
    (8, 1280, 1280, 12), (1, 128, 128, 384), (8, 320, 320, 48), (8, 2560, 1280, 12), (8, 1280, 1280, 24),
    (1, 256, 256, 192), (1, 512, 512, 96), (8, 640, 640, 24), (8, 1280, 1280, 6),
)  # fmt: skip
#: The official row's time over the compiled row's with direct convolutions (pairs_sd21_384.log, this Xeon).
DIRECT_COMPILED_RATIO = 1.76


def shape_row(batch: int, c_in: int, c_out: int, side: int, cpu: torch.device) -> dict[str, float]:
    """Times (s) and errors of the direct convolution and of F(2) and F(4) for one shape."""
    seconds = lambda fn: time_call(fn, cpu, repeats=3)["median_s"]  # noqa: E731
    x = torch.randn(batch, c_in, side, side)
    w = torch.randn(c_out, c_in, 3, 3) / (9 * c_in) ** 0.5  # ~unit outputs
    exact = F.conv2d(x.double(), w.double(), padding=1)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    x_last = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C) for the Winograd path
    row = {
        "direct": min(seconds(lambda: F.conv2d(x, w, padding=1)), seconds(lambda: F.conv2d(x_nhwc, w, padding=1))),
        "direct_err": relative_error(F.conv2d(x, w, padding=1), exact),
    }
    for m in (2, 4):
        a, tiles = m + 2, batch * math.ceil(side / m) ** 2
        v, u = torch.randn(a * a, tiles, c_in), torch.randn(a * a, c_in, c_out)
        row[f"f{m}_products"] = seconds(functools.partial(torch.bmm, v, u))
        operands = (x_last, transform_filters(w, m), *tile_transforms(m))
        torch._dynamo.reset()  # a fresh graph per shape: dynamo stops recompiling one function after 8
        compiled = torch.compile(winograd_conv3x3, dynamic=False)
        row[f"f{m}"] = seconds(functools.partial(compiled, *operands))
        row[f"f{m}_err"] = relative_error(compiled(*operands).permute(0, 3, 1, 2), exact)
    return row


def conv3x3_shares(image_size: int = 384, ensemble: int = 8) -> tuple[dict[tuple, float], float]:
    """Share of one image's work in each 3x3 stride-1 convolution shape, and in all of them.

    The work: the VAE encoder on one image and the UNet, truncated after ``up_blocks[1]``, on E
    noisy latents (the SDK's per-image features), counted on ``meta`` tensors.

    Returns:
        ``({(batch, C_in, C_out, side): share}, share of all 3x3 stride-1 convolutions)``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from sd4match_sdk.testing import build_sd21_random

    components = build_sd21_random(device="meta")
    unet, vae = components.unet, components.vae
    flop: collections.Counter = collections.Counter()

    def count(module: nn.Conv2d, _inputs, out: Tensor) -> None:
        if module.kernel_size == (3, 3) and module.stride == (1, 1):
            flop[(out.shape[0], module.in_channels, module.out_channels, out.shape[-1])] += (
                2 * out.numel() * module.in_channels * 9 // module.groups
            )

    class Truncated(Exception):
        """Raised on entering ``up_blocks[2]``: the SDK stops after ``up_blocks[1]``."""

    def stop(_module, _inputs) -> None:
        raise Truncated

    convs = [m for m in (*unet.modules(), *vae.modules()) if isinstance(m, nn.Conv2d)]
    hooks = [m.register_forward_hook(count) for m in convs] + [unet.up_blocks[2].register_forward_pre_hook(stop)]
    side = image_size // 8
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vae.encode(torch.zeros(1, 3, image_size, image_size, device="meta"))
        try:
            unet(torch.zeros(ensemble, 4, side, side, device="meta"), torch.full((ensemble,), 50, device="meta"),
                 torch.zeros(ensemble, 77, 1024, device="meta"))  # fmt: skip
        except Truncated:
            pass
    for hook in hooks:
        hook.remove()
    total = counter.get_total_flops()
    return {shape: f / total for shape, f in flop.items()}, sum(flop.values()) / total


def amdahl_bound(shares: dict[tuple, float], gains: dict[tuple, float]) -> float:
    """Speed-up of the whole if each shape's share ran ``gains[shape]`` times faster (others: the best gain)."""
    best = max(gains.values())
    rest = 1.0 - sum(shares.values())
    return 1.0 / (rest + sum(s / max(1.0, gains.get(shape, best)) for shape, s in shares.items()))


def matching_deviations(tiles: tuple[int, ...], pair_count: int) -> dict[int, tuple[int, float]]:
    """Largest distance (px) between the float32 SDK's matches with direct and with Winograd convolutions.

    The ``reference`` row of ``bench_pairs.py`` (SD 2.1 architecture, random weights, 384 px, E = 8,
    Single prompt) on its first ``pair_count`` pairs and seeds, then the same model (rebuilt: the
    replacement drops the weights) with every 3x3 convolution of the UNet and the VAE encoder
    replaced by F(m x m, 3 x 3) (``use_winograd(..., min_channels=0)``), eagerly, for each m in ``tiles``.

    Returns:
        ``{m: (convolutions replaced, deviation in px)}``.
    """
    import bench_pairs
    import numpy as np

    from sd4match_sdk.config import FeatureConfig

    cpu = torch.device("cpu")
    args = argparse.Namespace(model="sd21", prompt_kind="single", tiny_dir=None, dino_dir=None, memory_budget=None)
    pairs = bench_pairs.bench_pairs(pair_count)

    def matches(tile: int | None) -> tuple[int, list]:
        components, prompt, dino = bench_pairs.build_parts(args, cpu)
        replaced = (
            0 if tile is None else sum(use_winograd(m, 0, tile) for m in (components.unet, components.vae.encoder))
        )
        matcher = bench_pairs.sdk_matcher("reference", components, prompt, dino, FeatureConfig(384, 50, 8), cpu, args)
        with torch.no_grad():
            return replaced, [matcher.match(*pairs[i], seed=bench_pairs.pair_seed(i)).points for i in range(pair_count)]

    _, direct = matches(None)
    deviations = {}
    for m in tiles:
        replaced, points = matches(m)
        deviations[m] = replaced, max(float(np.linalg.norm(a - b, axis=-1).max()) for a, b in zip(direct, points))
    return deviations


def per_shape_gains(row: dict[str, float]) -> dict[str, float]:
    """Three ways a shape could run, as gains over its direct convolution (never below 1: direct)."""
    gain = lambda key: max(1.0, row["direct"] / row[key])  # noqa: E731
    return {
        "F(2x2,3x3), its matrix products alone": gain("f2_products"),
        "F(4x4,3x3), its matrix products alone": gain("f4_products"),
        "F(4x4,3x3) as the SDK runs it (compiled), where faster than direct": gain("f4"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deviation-pairs", type=int, default=2, help="pairs of the matching check (0: skip it)")
    pair_count = parser.parse_args().deviation_pairs
    cpu = torch.device("cpu")
    print(f"# machine: {machine(cpu)}")
    shares, conv_share = conv3x3_shares()
    print(f"# 3x3 stride-1 convolutions: {conv_share:.1%} of one image's work (VAE + truncated UNet, 384 px, E=8)")
    header = (
        f"{'B x C_in -> C_out, side':<26} {'share':>6} {'direct ms':>10} {'F2 mm':>6} {'F2':>6} {'F4 mm':>6} {'F4':>6}"
    )
    print(header + f" {'err direct':>10} {'err F2':>8} {'err F4':>8}")
    gains: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for shape in SHAPES:
        row = shape_row(*shape, cpu)
        for way, gain in per_shape_gains(row).items():
            gains[way][shape] = gain
        cells = [row["direct"] / row[key] for key in ("f2_products", "f2", "f4_products", "f4")]
        batch, c_in, c_out, side = shape
        print(f"{f'{batch} x {c_in} -> {c_out}, {side}':<26} {shares.get(shape, 0):>6.1%} {1e3 * row['direct']:>10.1f} "
              + " ".join(f"{g:>5.2f}x" for g in cells)
              + f" {row['direct_err']:>10.1e} {row['f2_err']:>8.1e} {row['f4_err']:>8.1e}")  # fmt: skip
    print("(gains over the direct convolution: 'mm' the Winograd matrix products alone, as if the transforms")
    print(" were free; without it the whole algorithm as the SDK writes it, compiled; errors relative to float64)")
    for way, way_gains in gains.items():
        bound = amdahl_bound(shares, way_gains)
        print(
            f"# {way}: the SDK row at most {bound:.2f}x faster, {DIRECT_COMPILED_RATIO * bound:.2f}x the official row"
        )
    print(
        f"# (the compiled row with direct convolutions: {DIRECT_COMPILED_RATIO}x, pairs_sd21_384.log; the target: 2.5x)"
    )
    if pair_count:
        for m, (replaced, px) in matching_deviations((2, 4), pair_count).items():
            print(
                f"# matches with F({m}x{m},3x3) in all {replaced} 3x3 convolutions of the UNet and the VAE: "
                f"at most {px:.4f} px from the direct ones ({pair_count} pairs x 20 points, SD 2.1 architecture, 384 px)"
            )


if __name__ == "__main__":
    main()
