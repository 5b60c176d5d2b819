"""Training throughput: optimiser steps per second at batch 9 (docs/design.md §8.4, §8.8), model step only.

With ``--full`` the model is the whole SD 2.1 architecture (UNet 866M parameters, VAE, 23-layer
CLIP text encoder) with RANDOM weights (``sd4match_sdk.testing.build_sd21_random``), built
directly on the device; without it, the tiny test model. Each step is exactly what
``sd4match-train`` runs per step (noise draws, VAE encode, CLIP + truncated UNet forward and
backward under autocast, the loss, the gradient sum over the processes, Adam), on random images
with 10 keypoints per pair; image decoding is left out (the DataLoader workers overlap it with
the model in training).

    python benchmarks/bench_train.py --full --device cuda --steps 10                # one process, micro-batches 9 and 3
    python benchmarks/bench_train.py --full --processes plain 1 8 --steps 10        # torchrun on 1 and 8 GPUs, and without
    python benchmarks/bench_train.py --processes plain 1 2 --steps 3 --image-size 256 --micro-batch 2 1   # tiny, gloo on CPU
    torchrun --nproc-per-node 8 benchmarks/bench_train.py --full --steps 10         # under your own torchrun (rank 0 prints)

``--processes`` runs this script under ``torchrun --standalone --nproc-per-node N`` for each N
(``plain``: one process without torchrun, to see what torchrun itself costs) and prints one table.
With N processes the global batch is split across them, so pairs/s is the whole job's. Reports
per micro-batch size (pairs per forward/backward on each process): median and IQR seconds per
step (CUDA-synchronised), steps/s, pairs/s and the peak memory of the busiest process (GPU:
``max_memory_allocated``; CPU: the process's peak RSS so far, which only grows). A micro-batch
that does not fit is reported as out of memory. On a CPU every process is one gloo process with
one thread (torchrun's default); such figures show that the code runs, not what GPUs do.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
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
    """``count`` pairs of random images (written once: the CPM's DINOv2 cache reads them); one category."""

    name = "random"

    def __init__(self, folder: Path, count: int, frame: int) -> None:
        from PIL import Image

        super().__init__(folder, "trn", frame)
        rng = np.random.default_rng(0)
        kps = np.zeros((10, 2))
        for i in range(count):
            paths = [folder / f"{i}{side}.png" for side in "ab"]
            for path in paths:
                if not path.is_file():
                    Image.fromarray(rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8)).save(path)
            self.records.append(
                PairRecord(paths[0], paths[1], "cat", f"cat-{i}a", f"cat-{i}b", kps, kps, None, None, False,
                           ThresholdKind.IMAGE, str(i))  # fmt: skip
            )


def random_batch(dataset: RandomPairs, size: int, generator, rank: int, world: int):
    """This rank's share of a random global batch of all of ``dataset``'s pairs (the same on every rank)."""
    import torch

    from sd4match_sdk.distributed import shard_range
    from sd4match_sdk.training.data import TrainBatch
    from sd4match_sdk.training.dino_cache import dino_cache_key

    pairs = len(dataset)
    pixels = torch.rand(2 * pairs, 3, size, size, generator=generator) * 2 - 1
    kps = [torch.rand(10, 2, generator=generator) * (size - 1) for _ in range(2 * pairs)]
    share = list(shard_range(pairs, rank, world))
    keys = [dino_cache_key(p, False) for r in dataset.records for p in (r.source_path, r.target_path)]
    return TrainBatch(
        pixels=pixels[[2 * i + j for i in share for j in (0, 1)]], kps0=[kps[2 * i] for i in share],
        kps1=[kps[2 * i + 1] for i in share], categories=["cat"] * len(share),
        dino_keys=[keys[2 * i + j] for i in share for j in (0, 1)], indices=share, positions=share, step_pairs=pairs,
    )  # fmt: skip


def build_components(full: bool, device, work: Path, distributed):
    from sd4match_sdk.models.loading import load_sd_components
    from sd4match_sdk.testing import build_sd21_random, build_tiny_sd

    if not full:  # written once, by rank 0, and loaded by every process
        path = distributed.broadcast_from_main(lambda: str(build_tiny_sd(work / "tiny-sd21")), "writing the tiny model")
        return load_sd_components(path)
    return build_sd21_random(device=device)  # random init of 1.3B parameters is far faster on a GPU


def build_dino(full: bool, device, work: Path, distributed):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from sd4match_sdk.models.dino import load_pil_processor
    from sd4match_sdk.testing import build_tiny_dino

    path = distributed.broadcast_from_main(lambda: str(build_tiny_dino(work / "tiny-dinov2")), "writing the tiny DINOv2")
    processor = load_pil_processor(path)  # the facebook/dinov2-base geometry, as the SDK loads it
    if not full:
        return Dinov2Model.from_pretrained(path).eval(), processor
    with torch.device(device):
        return Dinov2Model(Dinov2Config()).eval(), processor


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_micro_batch(trainer, dataset, args, micro: int, distributed) -> dict:
    """Median seconds per step of ``trainer`` (one micro-batch size); ``oom`` when it does not fit."""
    import torch

    from sd4match_sdk.errors import DistributedError

    device = trainer.device
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    loss, oom = float("nan"), False
    try:
        for i in range(args.warmup + args.steps):
            batch = random_batch(dataset, args.image_size, generator, distributed.rank, distributed.world_size)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = trainer.train_step(batch)  # returns after the gradient sum: every rank waits for all
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    except (torch.OutOfMemoryError, DistributedError):  # DistributedError: another process ran out
        oom = True
    peaks = distributed.gather_objects(None if oom else peak_memory_gib(device))
    if oom or None in peaks:
        return {"micro_batch": micro, "oom": True}
    median = statistics.median(times)
    q = np.percentile(times, [25, 75]) if len(times) > 1 else [median, median]
    return {
        "micro_batch": micro, "seconds_per_step": median, "iqr": [float(q[0]), float(q[1])],
        "steps_per_second": 1 / median, "pairs_per_second": args.batch_size / median,
        "peak_gib_per_process": max(peaks), "last_loss": loss, "oom": False,
    }  # fmt: skip


def machine(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    return f"CPU {cpu}, {torch.get_num_threads()} thread(s) per process"


def run(args) -> dict:
    import torch

    from sd4match_sdk.distributed import close_distributed, device_for_rank, init_distributed
    from sd4match_sdk.training import Trainer, TrainConfig

    distributed = init_distributed()
    device = device_for_rank(args.device, distributed.local_rank)
    work = Path(distributed.broadcast_from_main(lambda: tempfile.mkdtemp(prefix="sd4match-bench-train-"), "making a folder"))
    t0 = time.perf_counter()
    components = build_components(args.full, device, work, distributed)
    dino = build_dino(args.full, device, work, distributed) if args.prompt == "cpm" else None
    build_seconds = time.perf_counter() - t0
    unet_params = sum(p.numel() for p in components.unet.parameters())
    say = print if distributed.is_main else (lambda *a, **k: None)
    say(f"machine: {platform.node()} | {machine(device)} | torch {torch.__version__} | {distributed.world_size} "
        f"process(es){' under torchrun' if 'TORCHELASTIC_RUN_ID' in os.environ else ''} | model: "
        f"{'SD 2.1 architecture, random weights' if args.full else 'tiny SD-2.1-shaped model'} "
        f"(UNet {unet_params / 1e6:.0f}M params), built in {build_seconds:.1f} s")  # fmt: skip
    say(f"step: {args.prompt} prompt, global batch {args.batch_size} pairs ({2 * args.batch_size} images) at "
        f"{args.image_size} px, t=261, E=1, precision {args.precision}, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}; {args.warmup} warm-up + {args.steps} timed steps")  # fmt: skip
    dataset = distributed.broadcast_from_main(lambda: RandomPairs(work, args.batch_size, args.image_size), "writing images")
    results = []
    for micro in args.micro_batch:
        config = TrainConfig(
            prompt=args.prompt, dataset="random", root=str(work), output_dir=str(work / f"run{micro}"),
            batch_size=args.batch_size, micro_batch_size=micro, image_size=args.image_size, device=str(device),
            precision=args.precision, gradient_checkpointing=args.gradient_checkpointing, max_steps=1, num_workers=0,
        )  # fmt: skip
        trainer = Trainer(config, components, dataset, None, dino, progress=False, tensorboard=False, distributed=distributed)
        row = time_micro_batch(trainer, dataset, args, micro, distributed)
        results.append(row)
        say(format_row(row, f"{distributed.world_size} process(es)"))
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report = {"device": machine(device), "processes": distributed.world_size, "full": args.full, "prompt": args.prompt,
              "batch_size": args.batch_size, "image_size": args.image_size, "precision": args.precision,
              "build_seconds": build_seconds, "results": results}  # fmt: skip
    close_distributed(distributed)
    return report


def format_row(row: dict, label: str) -> str:
    if row["oom"]:
        return f"  {label}, micro-batch {row['micro_batch']}: out of memory"
    q = row["iqr"]
    return (f"  {label}, micro-batch {row['micro_batch']}: {row['seconds_per_step']:.3f} s/step "
            f"(IQR {q[0]:.3f}-{q[1]:.3f}) = {row['steps_per_second']:.3f} steps/s = {row['pairs_per_second']:.2f} pairs/s, "
            f"peak memory per process {row['peak_gib_per_process']:.2f} GiB, loss {row['last_loss']:.3f}")  # fmt: skip


def sweep(args, argv: list[str]) -> list[dict]:
    """This script once per entry of ``--processes`` (``plain``: no torchrun), collecting rank 0's report."""
    forwarded, skip = [], False
    for item in argv:  # everything but --processes and --json
        if item in ("--processes", "--json"):
            skip = True
            continue
        if skip and not item.startswith("--"):
            continue
        skip = False
        forwarded.append(item)
    # one thread per process everywhere (torchrun's default for several), so that rows compare
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    reports = []
    for count in args.processes:
        out = Path(tempfile.mkdtemp(prefix="sd4match-bench-sweep-")) / "report.json"
        head = [sys.executable] if count == "plain" else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                          f"--nproc-per-node={count}"]  # fmt: skip
        subprocess.run([*head, str(Path(__file__).resolve()), *forwarded, "--json", str(out)], check=True, env=env)
        report = json.loads(out.read_text())
        report["launch"] = "1 process, no torchrun" if count == "plain" else f"{count} process(es) under torchrun"
        reports.append(report)
    print(f"\nsummary ({reports[0]['device']}; global batch {args.batch_size}):")
    for report in reports:
        for row in report["results"]:
            print(format_row(row, report["launch"]))
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SD 2.1 architecture with random weights")
    parser.add_argument("--device", default="auto", help="auto (each process's GPU, else the CPU), cpu, cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per micro-batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=9, help="global batch (all processes together)")
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[9, 3], help="micro-batch sizes to time (per process)")
    parser.add_argument("--image-size", type=int, default=768)
    parser.add_argument("--prompt", default="single", choices=["single", "class", "cpm"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--processes", nargs="+", default=None, help="run under torchrun with each count (plain: without)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.processes:
        reports = sweep(args, sys.argv[1:])
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")
        return 0
    report = run(args)
    if args.json and int(os.environ.get("RANK", "0")) == 0:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
