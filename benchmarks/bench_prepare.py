"""Batch preparation on the CPU: inline versus on a worker thread (docs/design.md §13.22).

``match_batch`` prepares each device batch (decode, resize, noise) before running it; on an
accelerator the next batch is prepared on a worker thread while the current one runs. This
measures, on the CPU, ``match_batch`` with one pair per batch prepared inline (the SDK's CPU
behaviour) and on the worker (forced), against ``match`` one pair at a time, with the tiny model.

    python benchmarks/bench_prepare.py [--pairs 4] [--repeats 3] [--image-size 384]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sd4match_sdk.matcher as matcher_module  # noqa: E402
from bench_pairs import bench_pairs  # noqa: E402
from common import cpu_model  # noqa: E402
from sd4match_sdk import Matcher  # noqa: E402
from sd4match_sdk.features.pipeline import prefetched  # noqa: E402
from sd4match_sdk.testing import build_tiny_sd  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=384)
    args = parser.parse_args()
    model = Path(tempfile.mkdtemp()) / "sd"
    build_tiny_sd(model)
    items = [tuple(p) for p in bench_pairs(args.pairs)]
    matcher = Matcher.from_pretrained(str(model), image_size=args.image_size, ensemble=8)
    matcher.backend.budget.memory_budget = 2 * matcher.backend.budget.bytes_per_image  # one pair per batch
    matcher.match(*items[0], seed=0)  # warm-up
    ways = {
        "match, one pair per call": lambda: [matcher.match(*item, seed=0) for item in items],
        "match_batch, inline (CPU default)": lambda: matcher.match_batch(items, seed=0),
        "match_batch, worker thread": lambda: matcher.match_batch(items, seed=0),
    }
    print(f"# tiny model, {args.image_size} px, E=8, {args.pairs} pairs, one pair per batch; {cpu_model()}")
    for name, run in ways.items():
        # the worker row forces the accelerator behaviour: prepare the next batch on a thread
        matcher_module.prefetched = (lambda tasks, ahead: prefetched(tasks, True)) if "worker" in name else prefetched
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) / args.pairs)
        print(f"{name:<36} {statistics.median(times):.3f} s/pair (median of {args.repeats})")
    matcher_module.prefetched = prefetched


if __name__ == "__main__":
    main()
