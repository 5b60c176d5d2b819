"""Training throughput: optimiser steps per second at batch 9 (docs/design.md §8.4), model step only.

With ``--full`` the model is the whole SD 2.1 architecture (UNet 866M parameters, VAE, 23-layer
CLIP text encoder) with RANDOM weights (``sd4match_sdk.testing.build_sd21_random``), built
directly on the device; without it, the tiny test model. Each step is exactly what
``sd4match-train`` runs per step (noise draws, VAE encode, CLIP + truncated UNet forward and
backward under autocast, the loss, Adam), on random 768 px images with 10 keypoints per pair;
image decoding is left out (the DataLoader workers overlap it with the GPU in training).

    python benchmarks/bench_train.py --full --device cuda --steps 10               # micro-batches 9 and 3
    python benchmarks/bench_train.py --steps 3 --image-size 256                     # tiny model, CPU

Reports per micro-batch size: median and IQR seconds per step (CUDA-synchronised), steps/s,
pairs/s and peak GPU memory; a micro-batch that does not fit is reported as out of memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from sd4match_sdk.data import PairDataset, PairRecord, ThresholdKind  # noqa: E402


class RandomPairs(PairDataset):
    """Records only (the benchmark feeds tensors directly); one category."""

    name = "random"

    def __init__(self, folder: Path, count: int, frame: int) -> None:
        super().__init__(folder, "trn", frame)
        kps = np.zeros((10, 2))
        for i in range(count):
            self.records.append(
                PairRecord(folder / f"{i}a.png", folder / f"{i}b.png", "cat", f"cat-{i}a", f"cat-{i}b", kps, kps,
                           None, None, False, ThresholdKind.IMAGE, str(i))  # fmt: skip
            )


def random_batch(pairs: int, size: int, generator):
    import torch

    from sd4match_sdk.training.data import TrainBatch

    pixels = torch.rand(2 * pairs, 3, size, size, generator=generator) * 2 - 1
    kps = [torch.rand(10, 2, generator=generator) * (size - 1) for _ in range(2 * pairs)]
    return TrainBatch(
        pixels=pixels, kps0=kps[0::2], kps1=kps[1::2], categories=["cat"] * pairs,
        dino_keys=[f"img{i}|flip=0" for i in range(2 * pairs)], images=[], indices=list(range(pairs)),
    )  # fmt: skip


def build_components(full: bool, device, work: Path):
    from sd4match_sdk.models.loading import load_sd_components
    from sd4match_sdk.testing import build_sd21_random, build_tiny_sd

    if not full:
        return load_sd_components(str(build_tiny_sd(work / "tiny-sd21")))
    return build_sd21_random(device=device)  # random init of 1.3B parameters is far faster on a GPU


def build_dino(full: bool, device):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config() if full else Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)
    with torch.device(device):
        return Dinov2Model(config).eval(), None


def run(args) -> dict:
    import torch

    from sd4match_sdk.training import Trainer, TrainConfig

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="sd4match-bench-train-"))
    t0 = time.perf_counter()
    components = build_components(args.full, device, work)
    dino = build_dino(args.full, device) if args.prompt == "cpm" else None
    build_seconds = time.perf_counter() - t0
    unet_params = sum(p.numel() for p in components.unet.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {platform.node()} | {name} | torch {torch.__version__} | model: "
          f"{'SD 2.1 architecture, random weights' if args.full else 'tiny SD-2.1-shaped model'} "
          f"(UNet {unet_params / 1e6:.0f}M params), built in {build_seconds:.1f} s")  # fmt: skip
    print(f"step: {args.prompt} prompt, batch {args.batch_size} pairs ({2 * args.batch_size} images) at "
          f"{args.image_size} px, t=261, E=1, precision {args.precision}, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}; {args.warmup} warm-up + {args.steps} timed steps")  # fmt: skip
    results = []
    for micro in args.micro_batch:
        config = TrainConfig(
            prompt=args.prompt, dataset="random", root=str(work), output_dir=str(work / f"run{micro}"),
            batch_size=args.batch_size, micro_batch_size=micro, image_size=args.image_size, device=str(device),
            precision=args.precision, gradient_checkpointing=args.gradient_checkpointing, max_steps=1, num_workers=0,
        )  # fmt: skip
        trainer = Trainer(config, components, RandomPairs(work, args.batch_size, args.image_size), None, dino,
                          progress=False, tensorboard=False)  # fmt: skip
        generator = torch.Generator().manual_seed(0)
        if trainer.dino_cache is not None:  # training reads cached DINOv2 tokens; fill the cache
            hidden = int(dino[0].config.hidden_size)
            for i in range(2 * args.batch_size):
                trainer.dino_cache.memory[f"img{i}|flip=0"] = torch.randn(256, hidden, generator=generator)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times: list[float] = []
        oom = False
        try:
            for i in range(args.warmup + args.steps):
                batch = random_batch(args.batch_size, args.image_size, generator)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                loss = trainer.train_step(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
        except torch.OutOfMemoryError:
            oom = True
        if oom:  # outside the except block, so the traceback's tensors are gone
            print(f"  micro-batch {micro}: out of memory")
            results.append({"micro_batch": micro, "oom": True})
            del trainer
            gc.collect()
            torch.cuda.empty_cache()
            continue
        median = statistics.median(times)
        q = np.percentile(times, [25, 75]) if len(times) > 1 else [median, median]
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        row = {
            "micro_batch": micro, "seconds_per_step": median, "iqr": [float(q[0]), float(q[1])],
            "steps_per_second": 1 / median, "pairs_per_second": args.batch_size / median, "peak_gib": peak,
            "last_loss": loss, "oom": False,
        }  # fmt: skip
        results.append(row)
        print(f"  micro-batch {micro}: {median:.3f} s/step (IQR {q[0]:.3f}-{q[1]:.3f}) = {1 / median:.3f} steps/s = "
              f"{args.batch_size / median:.2f} pairs/s, peak GPU memory {peak:.1f} GiB, loss {loss:.3f}")  # fmt: skip
        del trainer
    return {"device": name, "full": args.full, "prompt": args.prompt, "batch_size": args.batch_size,
            "image_size": args.image_size, "precision": args.precision, "build_seconds": build_seconds,
            "results": results}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD 2.1 architecture with random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per micro-batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=9)
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[9, 3], help="micro-batch sizes to time")
    parser.add_argument("--image-size", type=int, default=768)
    parser.add_argument("--prompt", default="single", choices=["single", "class", "cpm"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
