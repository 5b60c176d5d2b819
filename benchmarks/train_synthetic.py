"""Synthetic check that prompt tuning learns: real photos warped by random homographies.

Every correspondence of a pair (photo, warped photo) is known exactly, so the training loop can be
run end to end without a benchmark download. The model is the tiny SD-2.1-shaped network of
``sd4match_sdk.testing`` with RANDOM weights: its features carry no semantics, so this checks the
machinery (loss, gradients through CLIP and the UNet, Adam, checkpoints, validation), not the
paper's numbers. A Single prompt is tuned on pairs made from two demo photos and scored on
held-out pairs made from the two others.

Prints the training loss curve, the held-out nearest-neighbour PCK@0.1 during training, and the
held-out PCK@0.1 (nearest neighbour and Kernel-Soft-Argmax) of the initial and the final prompt.

    python benchmarks/train_synthetic.py --steps 300

Timings on a shared CPU are distorted by other processes; the script prints the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
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

DEMO = ROOT / "sd4match_sdk" / "assets" / "demo"
TRAIN_PHOTOS = ("dift_cat_src.png", "ldmcorr_source_cat.png")
HELD_OUT_PHOTOS = ("dift_cat_trg.png", "ldmcorr_target_cat.jpeg")


def random_homography(w: int, h: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A homography that rotates (up to 25 deg x strength), scales (0.8..1.15) and moves each corner
    by up to ``strength * 12%`` of the image, keeping the centre near the centre."""
    import cv2

    angle = np.deg2rad(rng.uniform(-25, 25) * strength)
    scale = rng.uniform(0.8, 1.15)
    cx, cy = w / 2, h / 2
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (corners - [cx, cy]) @ rot.T * scale + [cx, cy]
    moved += rng.uniform(-1, 1, (4, 2)) * strength * 0.12 * np.array([w, h])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))


def make_records(photos, pairs_per_photo: int, rng, folder: Path, side: int = 320, points: int = 16) -> list[PairRecord]:
    """Write (photo, warped photo) pairs as PNGs; keypoints are a jittered grid mapped by the homography."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name in photos:
        with Image.open(DEMO / name) as image:
            photo = image.convert("RGB")
        scale = side / max(photo.size)
        photo = np.asarray(photo.resize((round(photo.size[0] * scale), round(photo.size[1] * scale)), Image.BICUBIC))
        h, w = photo.shape[:2]
        source = folder / f"{Path(name).stem}.png"
        Image.fromarray(photo).save(source)
        for k in range(pairs_per_photo):
            H = random_homography(w, h, rng, strength=1.0)
            warped = cv2.warpPerspective(photo, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            target = folder / f"{Path(name).stem}_warp{k:02d}.png"
            Image.fromarray(warped).save(target)
            grid = np.stack(np.meshgrid(np.linspace(0.15, 0.85, 6), np.linspace(0.15, 0.85, 6)), -1).reshape(-1, 2)
            kps0 = (grid + rng.uniform(-0.04, 0.04, grid.shape)) * [w - 1, h - 1]
            kps1 = cv2.perspectiveTransform(kps0[None].astype(np.float64), H)[0]
            inside = (kps1[:, 0] >= 2) & (kps1[:, 0] <= w - 3) & (kps1[:, 1] >= 2) & (kps1[:, 1] <= h - 3)
            keep = np.flatnonzero(inside)[:points]
            records.append(
                PairRecord(
                    source_path=source, target_path=target, category="cat",
                    source_id=f"cat-{source.stem}", target_id=f"cat-{target.stem}",
                    source_kps=kps0[keep], target_kps=kps1[keep], source_bbox=None, target_bbox=None,
                    flip=False, threshold_kind=ThresholdKind.KEYPOINTS, name=target.stem,
                )  # fmt: skip
            )
    return records


class HomographyPairs(PairDataset):
    """Pairs with exactly known correspondences (PCK threshold: the target keypoints' extent)."""

    name = "synthetic-homography"
    splits = ("trn", "test")

    def __init__(self, folder: Path, split: str, records: list[PairRecord], frame: int) -> None:
        super().__init__(folder, split, frame)
        self.records = records


def calibrate_tiny_vae(components, records, image_size: int) -> float:
    """Give the random VAE two properties of SD 2.1's trained one; returns the new scaling factor.

    A trained VAE has a nearly deterministic posterior and SD 2.1's ``scaling_factor`` (0.18215)
    makes its latents unit-variance. The random tiny VAE has a posterior std of ~1 around means of
    std ~0.26, and 0.18215 shrinks those to ~0.05, so the latents are noise and the t = 261
    diffusion noise buries them. Here the log-variance output is set to -12 (std 0.0025) and the
    scaling factor to 1 / std of the posterior means on the training photos.
    """
    import torch

    from sd4match_sdk.data import read_rgb
    from sd4match_sdk.images import sd_pixels

    quant = components.vae.quant_conv  # 1x1 conv: channels [0, 4) mean, [4, 8) log-variance
    with torch.no_grad():
        quant.weight[4:] = 0
        quant.bias[4:] = -12.0
        paths = sorted({str(r.source_path) for r in records})
        pixels = torch.cat([sd_pixels(read_rgb(Path(p)), image_size) for p in paths])
        std = float(components.vae.encode(pixels).latent_dist.mean.std())
    components.vae.register_to_config(scaling_factor=1.0 / std)
    return 1.0 / std


#: Noise seeds the before/after scores are averaged over (the first is the validation's own).
SCORE_SEEDS = 3


def scores(trainer, dataset, seed: int) -> dict[str, float]:
    """PCK@0.1 of the trainer's current prompt, nearest neighbour and Kernel-Soft-Argmax, averaged
    over :data:`SCORE_SEEDS` noise seeds (with 16 x 16 cells and a few hundred keypoints one seed's
    figure moves by about a point)."""
    from sd4match_sdk.config import MatchConfig, MatchMethod
    from sd4match_sdk.evaluation import evaluate
    from sd4match_sdk.noise import derive_seed
    from sd4match_sdk.matcher import Matcher

    nn_matcher = trainer.validation_matcher()
    ksa = Matcher(nn_matcher.backend, MatchConfig(method=MatchMethod.KERNEL_SOFTARGMAX), matching_backend="torch")
    seeds = [derive_seed(seed, "validation")] + [derive_seed(seed, "score", k) for k in range(1, SCORE_SEEDS)]
    out = {}
    for key, matcher in (("nn", nn_matcher), ("kernel_softargmax", ksa)):
        values = [evaluate(matcher, dataset, alphas=(0.1,), seed=s, progress=False).summary.overall[0.1] for s in seeds]
        out[key] = float(np.mean(values))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--train-pairs", type=int, default=12, help="warps per training photo")
    parser.add_argument("--held-out-pairs", type=int, default=8, help="warps per held-out photo")
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="keep the run directory here (default: a temp dir)")
    parser.add_argument("--raw-vae", action="store_true", help="keep the random VAE as built (see calibrate_tiny_vae)")
    args = parser.parse_args()

    import torch

    from sd4match_sdk.models.loading import load_sd_components
    from sd4match_sdk.testing import build_tiny_sd
    from sd4match_sdk.training import Trainer, TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sd4match-synthetic-"))
    rng = np.random.default_rng(args.seed)
    train = HomographyPairs(work, "trn", make_records(TRAIN_PHOTOS, args.train_pairs, rng, work / "images"), args.image_size)
    held_out = HomographyPairs(work, "test", make_records(HELD_OUT_PHOTOS, args.held_out_pairs, rng, work / "images"), args.image_size)
    model = build_tiny_sd(work / "tiny-sd21", seed=args.seed)
    config = TrainConfig(
        prompt="single", dataset="synthetic-homography", root=str(work), output_dir=str(work / "run"),
        max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
        val_every=args.val_every, checkpoint_every=max(args.val_every, 1), seed=args.seed, device=args.device,
        num_workers=0,
    )  # fmt: skip
    components = load_sd_components(str(model))
    calibration = "raw random VAE (scaling 0.18215)"
    if not args.raw_vae:
        factor = calibrate_tiny_vae(components, train.records, args.image_size)
        calibration = f"VAE calibrated like a trained one (posterior std 0.0025, scaling {factor:.3f})"
    trainer = Trainer(config, components, train, held_out, progress=False, tensorboard=False)
    step_times: list[float] = []
    last = [time.perf_counter()]

    def timer(step: int, loss: float) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    print(f"SD4Match synthetic prompt-tuning check (tiny SD-2.1-shaped model, RANDOM weights; {calibration})")
    print(f"machine: {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads | device {trainer.device} | "
          f"load average {os.getloadavg()[0]:.2f} (other processes share these cores)")  # fmt: skip
    print(f"data: {len(train)} training pairs from {', '.join(TRAIN_PHOTOS)}; {len(held_out)} held-out pairs from "
          f"{', '.join(HELD_OUT_PHOTOS)}; {sum(r.num_keypoints for r in train.records)} / "
          f"{sum(r.num_keypoints for r in held_out.records)} keypoints; frame {args.image_size} px, "
          f"grid {args.image_size // 16} x {args.image_size // 16}")  # fmt: skip
    print(f"training: Single prompt, {args.steps} steps x {args.batch_size} pairs, Adam lr {args.lr}, t=261, E=1, "
          f"loss beta 0.04 with the 7x7 sigma-1.5 label")  # fmt: skip

    start = time.perf_counter()
    before = scores(trainer, held_out, args.seed)
    eval_seconds = time.perf_counter() - start
    before_train = scores(trainer, train, args.seed)
    start = time.perf_counter()
    last[0] = start
    result = trainer.run(on_step=timer)
    train_seconds = time.perf_counter() - start
    after = scores(trainer, held_out, args.seed)
    after_train = scores(trainer, train, args.seed)

    losses = np.array([loss for _, loss in result.losses])
    window = max(1, len(losses) // 15)
    print(f"\ntraining loss (mean of each {window} steps; uniform prediction on the grid gives "
          f"{0.96542 * np.log((args.image_size // 16) ** 2):.3f} at interior points):")  # fmt: skip
    for i in range(0, len(losses), window):
        chunk = losses[i : i + window]
        seconds = float(np.median(step_times[i : i + window]))
        print(f"  steps {i + 1:4d}-{i + len(chunk):4d}  loss {chunk.mean():.4f}   ({seconds:.2f} s/step median)")
    print(f"  first {window} steps {losses[:window].mean():.4f} -> last {window} steps {losses[-window:].mean():.4f}")
    print("\nheld-out nearest-neighbour PCK@0.1 during training (validation, t=261, E=1):")
    for v in result.validations:
        print(f"  step {v['step']:4d}  {100 * v['score']:.1f}")
    print(f"\nPCK@0.1 (threshold: target keypoint extent; t=261, E=1; mean over {SCORE_SEEDS} noise seeds)")
    print(f"  {'':36s}{'initial prompt':>16s}{'tuned prompt':>16s}")
    for label, b, a in (("held-out", before, after), ("training pairs", before_train, after_train)):
        for key in ("nn", "kernel_softargmax"):
            print(f"  {label + ', ' + key:36s}{100 * b[key]:16.1f}{100 * a[key]:16.1f}")
    print(f"\nbest validation step {result.best_step} ({100 * result.best_score:.1f}); "
          f"training {train_seconds:.0f} s ({result.step / train_seconds:.2f} steps/s incl. validation), "
          f"one held-out evaluation pass {eval_seconds / (2 * SCORE_SEEDS):.1f} s; run directory {work}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
