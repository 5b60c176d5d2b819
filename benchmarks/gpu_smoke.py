"""Smoke test of the SDK's user paths on a CUDA device (tiny models; prints PASS/FAIL lines).

Runs what the CPU test suite cannot: the Matcher on CUDA (fp16 weights, the CUDA matching
kernel), CPM with DINOv2 on CUDA, an ONNX engine opened with device="cuda", and the training and
evaluation CLIs with --device cuda. Compares CUDA results with the CPU float32 reference.

    python benchmarks/gpu_smoke.py            # needs CUDA
    python benchmarks/gpu_smoke.py --device cpu   # rehearsal on a CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from sd4match_sdk import Matcher  # noqa: E402
from sd4match_sdk.testing import build_tiny_dino, build_tiny_sd  # noqa: E402

DEMO = ROOT / "sd4match_sdk" / "assets" / "demo"
PAIR = (DEMO / "dift_cat_src.png", DEMO / "dift_cat_trg.png")
POINTS = [[400.0, 330.0], [680.0, 330.0], [550.0, 500.0], [0.0, 0.0], [1099.0, 1098.0]]
results: list[tuple[str, bool]] = []


def step(name: str):
    def wrap(fn):
        start = time.perf_counter()
        try:
            detail = fn()
            results.append((name, True))
            print(f"[PASS] {name}: {detail}  ({time.perf_counter() - start:.1f} s)", flush=True)
        except Exception:  # report and carry on: one run must show everything
            results.append((name, False))
            print(f"[FAIL] {name}\n{traceback.format_exc()}", flush=True)
        return fn
    return wrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = args.device
    tmp = Path(tempfile.mkdtemp(prefix="sd4match-smoke-"))
    sd = build_tiny_sd(tmp / "sd", v4_text_encoder_keys=True)
    dino = build_tiny_dino(tmp / "dino")
    ref = Matcher.from_pretrained(str(sd), ensemble=2, image_size=256, matching_backend="torch")
    want = ref.match(*PAIR, POINTS, seed=0)

    @step(f"Matcher on {dev}, default dtype, auto matching backend vs CPU fp32 torch")
    def _():
        m = Matcher.from_pretrained(str(sd), device=dev, ensemble=2, image_size=256)
        got = m.match(*PAIR, POINTS, seed=0)
        batch = m.match_batch([(PAIR[0], PAIR[1], POINTS), (PAIR[1], PAIR[0], POINTS[:2])], seed=0)
        d = np.abs(got.points - want.points).max()
        d_batch = np.abs(batch[0].points - got.points).max()
        if d > 2.0:
            raise AssertionError(f"max px diff {d:.3f}")
        dtype = next(m.backend.extractor.unet.parameters()).dtype
        return f"backend={m.matching_backend}, dtype={dtype}, vs cpu fp32 max px diff {d:.4f}, batch-single {d_batch:.4f} px"

    @step(f"Matcher on {dev} float32: kernel vs torch matching, match_batch == match")
    def _():
        mk = Matcher.from_pretrained(
            str(sd), device=dev, dtype=torch.float32, vae_dtype=torch.float32, ensemble=2, image_size=256, matching_backend="kernel"
        )
        mt = Matcher(mk.backend, matching_backend="torch")
        a, b = mk.match(*PAIR, POINTS, seed=1), mt.match(*PAIR, POINTS, seed=1)
        batch = mk.match_batch([(PAIR[0], PAIR[1], POINTS), (PAIR[1], PAIR[0], POINTS[:2])], seed=1)
        d_kernel = np.abs(a.points - b.points).max()
        d_batch = np.abs(batch[0].points - a.points).max()
        d_ref = np.abs(b.points - ref.match(*PAIR, POINTS, seed=1).points).max()
        if d_kernel > 0.05 or d_batch > 0.05 or d_ref > 0.05:
            raise AssertionError(f"kernel-torch {d_kernel}, batch-single {d_batch}, {dev}-cpu {d_ref}")
        return f"kernel-torch {d_kernel:.2e} px, batch-single {d_batch:.2e} px, {dev} fp32 vs cpu {d_ref:.2e} px"

    @step(f"CPM with DINOv2 on {dev}")
    def _():
        from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule

        torch.manual_seed(0)
        torch.save(ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32)).state_dict(), tmp / "ckpt.pt")
        kw = dict(prompt=str(tmp / "ckpt.pt"), dino=str(dino), ensemble=1, image_size=256, dtype=torch.float32, vae_dtype=torch.float32)
        g = Matcher.from_pretrained(str(sd), device=dev, **kw).match(*PAIR, POINTS, seed=2)
        c = Matcher.from_pretrained(str(sd), matching_backend="torch", **kw).match(*PAIR, POINTS, seed=2)
        d = np.abs(g.points - c.points).max()
        if d > 0.05:
            raise AssertionError(f"max px diff {d}")
        return f"{dev} vs cpu max px diff {d:.2e}"

    @step(f"ONNX engine opened with device={dev}")
    def _():
        from sd4match_sdk.config import FeatureConfig
        from sd4match_sdk.export import ExportConfig, export_engine

        out = tmp / "engine"
        export_engine(ExportConfig(model=str(sd), out=str(out), feature=FeatureConfig(image_size=256, ensemble=2)))
        m = Matcher.from_pretrained(str(out), device=dev)
        got = m.match(*PAIR, POINTS, seed=0)
        d = np.abs(got.points - want.points).max()
        if d > 0.05:
            raise AssertionError(f"max px diff {d}")
        return f"runtime {getattr(m.backend, 'name', '?')}, engine vs torch cpu max px diff {d:.2e}"

    @step(f"sd4match-train --device {dev} (single and cpm, 3 steps on the SPair fixture)")
    def _():
        from sd4match_sdk.training.cli import main as train

        configs, spair = ROOT / "training" / "configs", ROOT / "tests" / "fixtures" / "SPair-71k"
        fast = ["--set", "image_size=256", "--set", "batch_size=2", "--set", "num_workers=0", "--no-progress",
                "--set", "train_split=test", "--set", "val_split=test", "--set", "val_every=2", "--steps", "3",
                "--device", dev, "--model", str(sd)]
        codes = [train(["--config", str(configs / "single_spair.toml"), "--root", str(spair), "--out", str(tmp / "t1"), *fast]),
                 train(["--config", str(configs / "cpm_spair.toml"), "--root", str(spair), "--out", str(tmp / "t2"),
                        "--dino", str(dino), *fast])]
        if codes != [0, 0]:
            raise AssertionError(f"exit codes {codes}")
        return "exit codes 0, 0"

    @step(f"sd4match-eval --device {dev} on the PF-Willow fixture (6 pairs)")
    def _():
        from sd4match_sdk.evaluation.cli import main as evaluate

        code = evaluate(["--dataset", "pfwillow", "--root", str(ROOT / "tests" / "fixtures" / "pf-willow"),
                         "--pair-list", "test_pairs_DERIVED.csv", "--model", str(sd), "--image-size", "256",
                         "--ensemble", "2", "--max-pairs", "6", "--device", dev, "--no-progress",
                         "--out", str(tmp / "eval.json")])
        if code != 0:
            raise AssertionError(f"exit code {code}")
        return "exit code 0"

    failed = [n for n, ok in results if not ok]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")


if __name__ == "__main__":
    main()
