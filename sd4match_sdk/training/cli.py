"""``sd4match-train``: tune a Single, Class or CPM prompt (docs/design.md §8).

Example (the paper's SD4Match-CPM on SPair-71k)::

    sd4match-train --config training/configs/cpm_spair.toml --root data/SPair-71k --out runs/cpm_spair

A trial on the SPair-71k fixture of the tests, which has only a test split (docs/training.md)::

    sd4match-train --config training/configs/single_spair.toml --root tests/fixtures/SPair-71k \
        --set train_split=test --set val_split=test --steps 2 --model TINY_MODEL_DIR

Rerunning the same command after a kill resumes from ``<out>/state.pt``. Any config key can be
overridden with ``--set key=value`` (e.g. ``--set micro_batch_size=9 --set num_workers=8``).
On several GPUs or machines, launch the same arguments with ``torchrun`` (docs/distributed.md)::

    torchrun --nproc-per-node 3 -m sd4match_sdk.training --config training/configs/cpm_spair.toml ...

The step's ``batch_size`` pairs are then shared out across the processes, and the result does
not depend on their number. Heavy imports happen inside :func:`main`, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import NoReturn

from .._version import __version__
from ..console import add_verbose_flag, check_output_dir, run_command, start_program

__all__ = ["main", "run"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sd4match-train", description="Tune an SD4Match prompt (Single, Class or CPM).")
    p.add_argument("--version", action="version", version=f"sd4match-sdk {__version__}")
    p.add_argument("--config", default=None, help="TOML config (training/configs/<prompt>_<dataset>.toml)")
    p.add_argument("--root", default=None, help="dataset directory (overrides the config's root)")
    p.add_argument("--out", default=None, help="output directory (overrides output_dir)")
    p.add_argument("--model", default=None, help="SD 2.1 diffusers directory or hub id (overrides model)")
    p.add_argument("--dino", default=None, help="DINOv2 directory or hub id for CPM (overrides dino)")
    p.add_argument("--prompt", default=None, choices=["single", "class", "cpm"], help="prompt kind (overrides prompt)")
    p.add_argument("--dataset", default=None, choices=["spair", "pfpascal", "pfwillow"], help="overrides dataset")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps in total (overrides max_steps)")
    p.add_argument("--device", default=None, help="auto (CUDA when available; the configs' default), cpu, cuda, cuda:1 ... "
                   "(overrides device)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    add_verbose_flag(p)
    return p


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


def run() -> NoReturn:
    """``sd4match-train`` and ``python -m sd4match_sdk.training`` (:func:`~sd4match_sdk.console.start_program`)."""
    start_program(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sd4match-train`` (and ``python -m sd4match_sdk.training``); returns the exit code."""
    args = _build_parser().parse_args(argv)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's SIGTERM saves the state like Ctrl-C
    outcome: dict = {"where": "", "stopped": False}
    try:
        code = run_command("sd4match-train", lambda: _train(args, outcome), args.verbose, lambda: outcome["where"])
    except KeyboardInterrupt:
        outcome["stopped"], code = True, 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if outcome["stopped"]:
        print(f"sd4match-train{outcome['where']}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return code


def _train(args: argparse.Namespace, outcome: dict) -> None:
    """Join torchrun's process group (when launched by it), train, leave the group."""
    from ..distributed import close_distributed, init_distributed

    distributed = init_distributed()
    outcome["where"] = f" ({distributed.describe()})" if distributed.active else ""
    try:
        outcome["stopped"] = _run(args, distributed)
    finally:
        close_distributed(distributed)


def _start_line(config, trainer, num_pairs: int, total: int, distributed, workers: int, cpus: int) -> str:
    """What the run does, in one line: the split, the real step size, the device, the loader."""
    step_pairs = min(config.batch_size, num_pairs)  # a split smaller than the batch gives smaller steps
    processes = f" on {distributed.world_size} processes" if distributed.active else ""
    return (
        f"sd4match-train: {config.prompt} prompt on {config.dataset} {config.train_split} ({num_pairs} pairs), "
        f"{total} steps of {step_pairs} pairs{processes} (micro-batch {min(config.micro_batch, step_pairs)}), "
        f"t={config.timestep}, device {trainer.device}, autocast {trainer.amp_dtype or 'off'}, "
        f"{workers} loader workers on {cpus} CPUs" + (" (more workers than CPUs: slower)" if workers > cpus else "")
        + (f"; resuming at step {trainer.step}" if trainer.resumed else "")
    )


def _run(args: argparse.Namespace, distributed) -> bool:
    """Train; ``True`` when the run stopped early on a signal."""
    from ..config import DEFAULT_DINO_MODEL, default_sd_model
    from ..data import load_dataset
    from ..data.workers import available_cpus, loader_workers
    from ..errors import ConfigError
    from ..models.loading import load_dino, load_sd_components
    from .config import load_train_config, parse_override, resolve_device
    from .trainer import Trainer

    with distributed.together("reading the config and the dataset"):  # a bad launch stops every rank here
        overrides = dict(parse_override(o) for o in args.overrides)
        for key, value in (("root", args.root), ("output_dir", args.out), ("model", args.model), ("dino", args.dino),
                           ("prompt", args.prompt), ("dataset", args.dataset), ("max_steps", args.steps),
                           ("device", args.device)):  # fmt: skip
            if value is not None:
                overrides[key] = value
        config = load_train_config(args.config, **overrides)
        if not config.root:
            raise ConfigError("no dataset directory: pass --root DIR (or set root in the config)")
        check_output_dir(config.output_dir, "--out")
        resolve_device(config.device, distributed.local_rank)
        train_set = load_dataset(config.dataset, config.root, split=config.train_split, frame=config.image_size)
        val_set = load_dataset(config.dataset, config.root, split=config.val_split, frame=config.image_size) if config.val_split else None
    with distributed.together("loading the models"):
        components = load_sd_components(config.model or default_sd_model())
        dino = load_dino(config.dino or DEFAULT_DINO_MODEL) if config.prompt == "cpm" else None
    with distributed.together("preparing the run"):
        trainer = Trainer(config, components, train_set, val_set, dino, progress=not args.no_progress,
                          tensorboard=not args.no_tensorboard, distributed=distributed)  # fmt: skip
    if distributed.active:  # stop every process after the same step (signals reach each one)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: trainer.request_stop())
    total = config.total_steps(len(train_set))
    if distributed.is_main:
        print(_start_line(config, trainer, len(train_set), total, distributed, loader_workers(config.num_workers),
                          available_cpus()))  # fmt: skip
    result = trainer.run()
    if distributed.is_main and not result.stopped:
        best = f", best val NN-PCK@{config.val_alpha:g} {result.best_score:.4f} at step {result.best_step}" if result.best_step >= 0 else ""
        print(f"sd4match-train: done at step {result.step}{best}; prompts in {config.output_dir}")
    return result.stopped


if __name__ == "__main__":
    sys.exit(main())
