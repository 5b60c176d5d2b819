"""The six paper configs in training/configs read into the faithful settings (docs/design.md §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sd4match_sdk.training.config import load_train_config

CONFIGS = Path(__file__).parents[2] / "training" / "configs"
FAST = ["--set", "image_size=256", "--set", "batch_size=2", "--set", "num_workers=0", "--no-progress"]


@pytest.mark.parametrize("prompt", ["single", "class", "cpm"])
@pytest.mark.parametrize("dataset", ["spair", "pfpascal"])
def test_paper_configs(prompt, dataset):
    cfg = load_train_config(CONFIGS / f"{prompt}_{dataset}.toml")
    assert (cfg.prompt, cfg.dataset) == (prompt, dataset)
    assert (cfg.batch_size, cfg.lr, cfg.network_lr, cfg.timestep, cfg.ensemble) == (9, 1e-2, 1e-3, 261, 1)
    assert (cfg.image_size, cfg.beta, cfg.label_kernel, cfg.label_sigma, cfg.val_alpha) == (768, 0.04, 7, 1.5, 0.1)
    assert (cfg.train_split, cfg.val_split, cfg.val_every, cfg.val_max_pairs) == ("trn", "val", 0, 0)
    # SPair: 5 epochs of 53,340 pairs; PF-Pascal: 90 epochs of 2,940 pairs (about 30k steps each)
    steps = cfg.total_steps(53_340) if dataset == "spair" else cfg.total_steps(2_940)
    assert steps == (29_635 if dataset == "spair" else 29_430)
    if prompt == "cpm":
        assert (cfg.cpm_global, cfg.cpm_cond, cfg.dino) == (25, 50, "facebook/dinov2-base")
