"""Feature extraction: time per image and peak memory, truncated vs full UNet, side by side.

The full path runs the whole UNet (as the official code does) and reads ``up_blocks[1]`` with a
forward hook; the truncated path stops there. Both get the same inputs, and the script checks
their features agree before timing. Each variant runs in its own process so peak memory is its
own: CPU peak resident memory (ru_maxrss) or CUDA peak allocated memory.

    python benchmarks/bench_features.py                         # tiny model, CPU, E=8
    python benchmarks/bench_features.py --full --ensemble 1     # SD 2.1 architecture, random weights
    python benchmarks/bench_features.py --full --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, time_call  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _components(full: bool, dtype: torch.dtype, device: torch.device):
    from sd4match_sdk.models.loading import load_sd_components
    from sd4match_sdk.testing import build_sd21_random, build_tiny_sd

    if full:
        parts = build_sd21_random(device=device)
        parts.unet.to(dtype)
        return parts
    tmp = tempfile.mkdtemp(prefix="bench-tiny-")
    return load_sd_components(str(build_tiny_sd(Path(tmp) / "tiny")), dtype)


def _child(args: argparse.Namespace) -> dict:
    from sd4match_sdk.models.features import SDFeatureExtractor

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    parts = _components(args.full, dtype, device)
    ext = SDFeatureExtractor(parts.vae, parts.unet, parts.scheduler, args.timestep).to(device)
    unet_full = parts.unet.to(device)
    s = args.image_size
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(1, 3, s, s, generator=g) * 2 - 1).to(device)
    shape = ext.latent_shape(s)
    eps = torch.randn(1, *shape, generator=g).to(device)
    noise = torch.randn(1, args.ensemble, *shape, generator=g).to(device)
    context = torch.randn(1, 77, parts.text_encoder.config.hidden_size, generator=g).to(device, dtype)

    captured = {}
    unet_full.up_blocks[1].register_forward_hook(lambda m, i, o: captured.__setitem__("f", o))

    def full_features() -> torch.Tensor:
        latents = ext.encode_latents(pixels, eps)
        e = args.ensemble
        t = torch.full((e,), args.timestep, device=device)
        noisy = ext.scheduler.add_noise(latents.repeat_interleave(e, 0).float(), noise[0].float(), t)
        unet_full(noisy.to(dtype), t, encoder_hidden_states=context.repeat_interleave(e, 0))
        return captured["f"].float().mean(0, keepdim=True)

    def truncated_features() -> torch.Tensor:
        return ext(pixels, eps, noise, context)

    fn = truncated_features if args.child == "truncated" else full_features
    with torch.inference_mode():
        # ru_maxrss is a running peak: read it after loading and after the timed runs; the growth
        # is the forward pass's working memory on top of the loaded weights.
        load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            load_cuda = torch.cuda.memory_allocated(device)
        out = fn()
        timing = time_call(fn, device, args.repeats, warmup=args.warmup)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        other = truncated_features() if args.child == "full" else full_features()
    result = {
        "variant": args.child,
        **timing,
        "shape": list(out.shape),
        "max_abs_diff_vs_other": float((out - other).abs().max()),
        "machine": machine(device),
    }
    if device.type == "cuda":
        result["peak_gib"] = peak_cuda / 2**30
        result["forward_gib"] = (peak_cuda - load_cuda) / 2**30
    else:
        result["peak_gib"] = peak_rss / 2**20
        result["forward_gib"] = (peak_rss - load_rss) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD 2.1 architecture with random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--ensemble", type=int, default=8)
    parser.add_argument("--timestep", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", choices=["truncated", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return

    results = []
    for variant in ("full", "truncated"):
        cmd = [sys.executable, __file__, "--child", variant] + [a for a in sys.argv[1:] if not a.startswith("--json")]
        if args.json:
            cmd = [c for c in cmd if c != args.json]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    full, trunc = results
    model = "SD 2.1 architecture (random weights)" if args.full else "tiny SD-2.1-shaped model"
    print(f"# feature extraction, {model}, {args.image_size}px, E={args.ensemble}, t={args.timestep}, {args.dtype}")
    print(f"# machine: {trunc['machine']}")
    mem = "CUDA allocated" if args.device.startswith("cuda") else "CPU resident (ru_maxrss)"
    print(f"# memory: {mem}; 'forward' = growth of the peak over the loaded weights")
    print(f"{'variant':<10} {'s/image':>9} {'IQR':>7} {'peak GiB':>9} {'forward GiB':>12}  features")
    for r in results:
        print(f"{r['variant']:<10} {r['median_s']:>9.3f} {r['iqr_s']:>7.3f} {r['peak_gib']:>9.2f} {r['forward_gib']:>12.2f}  {r['shape']}")
    print(f"speed-up truncated vs full: {full['median_s'] / trunc['median_s']:.2f}x; "
          f"peak memory truncated/full: {trunc['peak_gib'] / full['peak_gib']:.2f}; "
          f"max |truncated - full| features: {trunc['max_abs_diff_vs_other']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
