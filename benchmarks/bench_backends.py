"""Time per image of feature extraction: PyTorch reference vs exported engines (ONNX Runtime).

One run, one machine: the same model is exported to an engine directory, then both backends
extract features of the same images with the same seeds (so the outputs are compared too).
Prints the machine (the CPU model: ONNX Runtime's speed against PyTorch depends on it), per-image
time (median and IQR over the repeats, after warm-up), the ratio, the memory each backend adds at
its peak while extracting one image (CPU: resident memory sampled every 10 ms), the feature
difference and the match difference against PyTorch; with ``--fp16`` also
an fp16 engine and its feature error against the fp32 reference (docs/design.md §13.10).

    python benchmarks/bench_backends.py                       # tiny SD-2.1-shaped model, 768 px, E=8
    python benchmarks/bench_backends.py --fp16                # + fp16 engine and its error
    python benchmarks/bench_backends.py --full --ensemble 1   # SD 2.1 architecture, random weights
    python benchmarks/bench_backends.py --device cuda         # torch on CUDA; ORT's CUDA provider if installed

``--full`` builds SD 2.1 with random weights in memory (~5 GB RAM) and exports it (the UNet graph
keeps its ~2.3 GB of weights in ``unet.onnx.data``); it takes minutes on a small CPU. Engines
are written to a temporary directory that is removed afterwards unless ``--keep DIR`` is given.
Not run by pytest.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, peak_rss_during, time_call  # noqa: E402

from sd4match_sdk import Matcher
from sd4match_sdk.features import TorchFeatureBackend
from sd4match_sdk.config import FeatureConfig
from sd4match_sdk.demo import demo_images
from sd4match_sdk.export import ExportConfig, export_engine
from sd4match_sdk.images import load_image
from sd4match_sdk.models.loading import load_sd_components
from sd4match_sdk.prompts import PromptWeights

POINTS = [[100.0, 120.0], [200.5, 80.25], [33.3, 250.0], [400.0, 300.0], [250.0, 200.0]]


def time_per_image(
    matcher: Matcher, images: list[np.ndarray], warmup: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median and IQR of seconds per image: each timed run extracts every image once (seed = index)."""

    def one_pass() -> None:
        for i, image in enumerate(images):
            matcher.features(image, seed=i)

    timing = time_call(one_pass, device, repeats=repeats, warmup=warmup)
    return timing["median_s"] / len(images), timing["iqr_s"] / len(images)


def peak_memory(matcher: Matcher, image: np.ndarray, device: torch.device) -> int:
    """Bytes the first extraction of one image adds at its peak (CUDA allocator peak, or sampled
    resident memory on the CPU): measured before any other run, since ONNX Runtime keeps the memory
    arena its first run grows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        matcher.features(image, seed=0)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return peak_rss_during(lambda: matcher.features(image, seed=0))


def outputs(matcher: Matcher, images: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    """Features of the first image and matches of the first pair, with seed 0 (to compare backends)."""
    features = matcher.features(images[0], seed=0).features.float().cpu()
    points = matcher.match(images[0], images[-1], POINTS, seed=0).points
    return features, points


def compare(reference: tuple[torch.Tensor, np.ndarray], other: tuple[torch.Tensor, np.ndarray]) -> dict[str, float]:
    """Feature and match differences of ``other`` against ``reference`` (same seeds)."""
    (f0, m0), (f1, m1) = reference, other
    cosine = torch.nn.functional.cosine_similarity(f0, f1, dim=1)
    return {
        "feature_max_abs": float((f0 - f1).abs().max()),
        "feature_max_rel": float((f0 - f1).abs().max() / f0.abs().max()),
        "feature_min_cosine": float(cosine.min()),
        "match_max_px": float(np.abs(m0 - m1).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="SD 2.1 architecture with random weights (default: tiny model)"
    )
    parser.add_argument("--model", default=None, help="a real SD 2.1 diffusers directory instead of random weights")
    parser.add_argument("--image-size", type=int, default=768)
    parser.add_argument("--ensemble", type=int, default=None, help="noise draws per image (default 8; 1 with --full)")
    parser.add_argument("--images", type=int, default=2, help="images per pass (the demo pair)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes (default 1; 0 with --full)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; 1 with --full)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true", help="also export an fp16 engine and print its error vs fp32")
    parser.add_argument("--keep", default=None, help="write the engines under this directory and keep them")
    parser.add_argument("--json", default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    full = args.full or args.model
    ensemble = args.ensemble or (1 if full else 8)
    warmup = args.warmup if args.warmup is not None else (0 if full else 1)
    repeats = args.repeats if args.repeats is not None else (1 if full else 3)
    device = torch.device(args.device)
    feature = FeatureConfig(image_size=args.image_size, timestep=50, ensemble=ensemble)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sd4match_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.model:
            label, components = f"SD 2.1 from {args.model}", load_sd_components(args.model)
        elif args.full:
            from sd4match_sdk.testing import build_sd21_random

            label, components = "SD 2.1 architecture, random weights", build_sd21_random()  # CPU: exported from there
        else:
            from sd4match_sdk.testing import build_tiny_sd

            label = "tiny SD-2.1-shaped model (random weights)"
            components = load_sd_components(str(build_tiny_sd(work / "tiny_sd")))
        print(f"machine: {platform.node()} | {machine(device)}")
        print(
            f"model: {label}; {args.image_size} px, t=50, ensemble {ensemble}, empty text prompt; {args.images} images x {repeats} passes (+{warmup} warm-up)"
        )

        images = [load_image(p) for p in demo_images()][: max(1, args.images)]
        while len(images) < args.images:
            images.append(images[len(images) % 2])
        engines = {"onnxruntime fp32": "fp32"} | ({"onnxruntime fp16": "fp16"} if args.fp16 else {})
        engine_dirs = {}
        for name, dtype in engines.items():
            out = engine_dirs[name] = work / f"engine_{dtype}"
            start = time.perf_counter()
            export_engine(
                ExportConfig(model=label, out=str(out), feature=feature, dtype=dtype, max_batch=2, overwrite=True),
                log=lambda *a: None,
                components=components,
            )
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"exported {name}: {time.perf_counter() - start:.1f} s, {size / 2**20:.0f} MiB in {out}", flush=True)

        # One backend in memory at a time (the full model is large): time it, keep its outputs.
        reference = Matcher(TorchFeatureBackend(components, PromptWeights.from_text(""), feature, device))
        torch_peak = peak_memory(reference, images[0], device)  # first: ONNX Runtime's arena grows on its first run
        torch_median, torch_iqr = time_per_image(reference, images, warmup, repeats, device)
        reference_outputs = outputs(reference, images)
        del reference, components
        gc.collect()
        results = {"torch fp32": {"seconds_per_image": torch_median, "iqr": torch_iqr, "peak_bytes": torch_peak}}
        providers = {}
        for name, out in engine_dirs.items():
            matcher = Matcher.from_pretrained(str(out), device=device)
            peak = peak_memory(matcher, images[0], device)
            median, iqr = time_per_image(matcher, images, warmup, repeats, device)
            results[name] = {
                "seconds_per_image": median,
                "iqr": iqr,
                "peak_bytes": peak,
                **compare(reference_outputs, outputs(matcher, images)),
            }
            providers[name] = matcher.backend.runners["unet"].providers[0]
            del matcher
            gc.collect()
        print()
        print(
            f"{'backend':<20} {'s/image':>9} {'IQR':>8} {'vs torch':>9} {'peak MiB':>9} {'feat max|d|':>12} {'rel':>9} "
            f"{'min cos':>9} {'match px':>9}"
        )
        print(f"{'torch fp32 (' + device.type + ')':<20} {torch_median:9.3f} {torch_iqr:8.3f} {1.0:9.2f} {torch_peak / 2**20:9.0f}")
        for name, r in results.items():
            if name == "torch fp32":
                continue
            print(
                f"{name:<20} {r['seconds_per_image']:9.3f} {r['iqr']:8.3f} {torch_median / r['seconds_per_image']:8.2f}x "
                f"{r['peak_bytes'] / 2**20:9.0f} {r['feature_max_abs']:12.3g} {r['feature_max_rel']:9.2g} "
                f"{r['feature_min_cosine']:9.6f} {r['match_max_px']:9.3g}"
            )
        print(f"onnxruntime provider: {', '.join(f'{k}: {v}' for k, v in providers.items())}")
        print(
            "'vs torch' > 1 means faster than PyTorch (on this CPU: the ratio depends on the CPU's vector units); "
            "'peak MiB' is the memory one image's extraction adds; feature/match columns compare with PyTorch fp32 on "
            "the same noise."
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine(device), "model": label, "image_size": args.image_size,
                                                   "ensemble": ensemble, "device": str(device), "results": results}, indent=2))  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
