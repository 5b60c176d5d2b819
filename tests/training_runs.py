"""The training runs the multi-process tests compare (tests/training): settings, arguments, prompts.

A Single prompt on the SPair fixture's 4 pairs at global batch 4, 256 px, no validation, a state
after every step. :func:`reference_trajectory` is one uninterrupted process with the whole batch
at once; the other runs split it across processes or micro-batches, or stop and resume.
"""

from __future__ import annotations

from pathlib import Path

import torch

SETTINGS = {
    "prompt": "single", "dataset": "spair", "image_size": "256", "batch_size": "4", "num_workers": "0",
    "train_split": "test", "val_split": "", "checkpoint_every": "1", "seed": "5",
}  # fmt: skip
STEPS = 3


def train_args(root: Path, model: Path, out: Path, steps: int = STEPS, **changes: str) -> list[str]:
    """``sd4match-train`` arguments of :data:`SETTINGS` (plus ``changes``)."""
    settings = {**SETTINGS, **changes}
    sets = [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    return ["--root", str(root), "--model", str(model), "--out", str(out), "--steps", str(steps), *sets,
            "--no-progress", "--no-tensorboard"]  # fmt: skip


def learned_prompt(weights) -> torch.Tensor:
    """The 75 learned tokens of a Single prompt (the frame tokens never change)."""
    return weights.token_embeds["dataset"][0, 1:-1].clone()


def saved_prompt(out: Path) -> torch.Tensor:
    from sd4match_sdk.prompts import load_prompt

    return learned_prompt(load_prompt(out / "last.safetensors"))


def saved_step(out: Path) -> int:
    from sd4match_sdk.training.checkpoint import load_state

    return int(load_state(out / "state.pt")["step"])


def reference_trajectory(model: Path, root: Path, out: Path, steps: int = STEPS, **changes: str) -> dict[int, torch.Tensor]:
    """The learned prompt before and after each step of one uninterrupted in-process run."""
    from sd4match_sdk.data import SPairDataset
    from sd4match_sdk.models.loading import load_sd_components
    from sd4match_sdk.training import Trainer
    from sd4match_sdk.training.config import load_train_config

    config = load_train_config(None, root=str(root), output_dir=str(out), max_steps=steps, **{**SETTINGS, **changes})
    split = SPairDataset(root, "test", frame=int(SETTINGS["image_size"]))
    trainer = Trainer(config, load_sd_components(str(model)), split, None, progress=False, tensorboard=False)
    prompts = {0: learned_prompt(trainer.prompt.to_weights())}
    trainer.run(on_step=lambda step, loss: prompts.__setitem__(step, learned_prompt(trainer.prompt.to_weights())))
    return prompts


def assert_same_prompt(actual: torch.Tensor, expected: torch.Tensor, previous: torch.Tensor) -> None:
    """Equal within 1e-5 relative, while one step moves the prompt far more (so the check can fail)."""
    difference = float((actual - expected).norm() / expected.norm())
    assert difference <= 1e-5, f"relative difference {difference:.2e}"
    assert float((expected - previous).norm() / expected.norm()) > 100 * 1e-5
