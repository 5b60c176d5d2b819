"""Fixtures for the training and evaluation tests: tiny models (built once) and benchmark trees."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Never reach for a hub: every model is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

FIXTURES = Path(os.environ.get("SD4MATCH_FIXTURES", Path(__file__).parents[1] / "fixtures"))


def _dataset_trees():
    path = Path(__file__).parents[1] / "data" / "dataset_trees.py"
    spec = importlib.util.spec_from_file_location("sd4match_dataset_trees", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny SD-2.1-shaped pipeline (text encoder stored with transformers-4 keys, as SD 2.1)."""
    from sd4match_sdk.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd21", v4_text_encoder_keys=True)


@pytest.fixture(scope="session")
def train_tiny_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd4match_sdk.testing import build_tiny_dino

    return build_tiny_dino(tmp_path_factory.mktemp("models") / "tiny-dinov2")


@pytest.fixture
def load_components(train_tiny_sd: Path):
    """Fresh frozen SD components (a Trainer moves and may reconfigure them)."""
    from sd4match_sdk.models.loading import load_sd_components

    return lambda: load_sd_components(str(train_tiny_sd))


@pytest.fixture(scope="session")
def spair_root() -> Path:
    return FIXTURES / "SPair-71k"


@pytest.fixture(scope="session")
def pfwillow_root() -> Path:
    return FIXTURES / "pf-willow"


@pytest.fixture(scope="session")
def pfpascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset_trees().build_pfpascal_tree(tmp_path_factory.mktemp("pfpascal"), FIXTURES / "pf-pascal-csv")
