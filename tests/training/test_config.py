"""The six paper configs in training/configs read into the faithful settings (docs/design.md §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sd4match_sdk.errors import ConfigError
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


def test_loader_workers_fit_the_machine():
    from sd4match_sdk.data.workers import loader_workers

    assert [loader_workers(-1, cpus) for cpus in (1, 2, 3, 4, 16)] == [0, 0, 2, 3, 4]
    assert loader_workers(6, cpus=2) == 6  # an explicit value is kept
    assert load_train_config(CONFIGS / "single_spair.toml").num_workers == -1  # the configs use auto
    with pytest.raises(ConfigError, match="num_workers must be >= 0, or -1 for auto"):
        load_train_config(num_workers=-2)


def test_more_workers_than_cpus_do_not_warn_twice(spair_root):
    """torch warns at construction and again at iteration; the start line of sd4match-train says it once."""
    import warnings

    from sd4match_sdk.data import SPairDataset
    from sd4match_sdk.data.workers import available_cpus
    from sd4match_sdk.training.data import step_loader

    dataset = SPairDataset(spair_root, "test", frame=256)
    config = load_train_config(image_size=256, batch_size=2, num_workers=available_cpus() + 1, train_split="test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(step_loader(dataset, config, 0, 2, pin_memory=False))
    assert len(batches) == 2 and [len(b) for b in batches] == [2, 2]
    assert not [w for w in caught if "worker" in str(w.message)]  # torch's twice-repeated warning is gone


WORKERS_EQUAL_INLINE = """
import dataclasses, sys
import torch
from sd4match_sdk.console import start_program
from sd4match_sdk.data import SPairDataset
from sd4match_sdk.training.config import load_train_config
from sd4match_sdk.training.data import step_loader


def same(x, y):
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return x == y


def check():
    dataset = SPairDataset(sys.argv[1], "test", frame=256)
    inline, workers = (
        list(step_loader(dataset, load_train_config(image_size=256, batch_size=2, num_workers=n, train_split="test"), 0, 3,
                         pin_memory=False))
        for n in (0, 2)
    )
    assert len(inline) == len(workers) == 3
    for a, b in zip(inline, workers):
        for field in dataclasses.fields(a):
            assert same(getattr(a, field.name), getattr(b, field.name)), field.name
    print(torch.multiprocessing.get_start_method())
    return 0


if __name__ == "__main__":
    start_program(check)
"""


def test_workers_of_a_program_decode_what_the_program_decodes(spair_root, tmp_path):
    """In a program entered through start_program (workers from a fork server: the dataset travels
    pickled), 2 loader workers give the batches decoded in the process itself."""
    import subprocess
    import sys

    import multiprocess  # tests/, on pytest's pythonpath

    script = tmp_path / "workers_equal_inline.py"
    script.write_text(WORKERS_EQUAL_INLINE)
    done = subprocess.run([sys.executable, str(script), str(spair_root)], capture_output=True, text=True,
                          env=multiprocess.environment(), timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "forkserver"
