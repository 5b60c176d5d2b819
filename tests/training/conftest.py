"""Fixtures for the training and evaluation tests: benchmark trees and fresh tiny-model components.

The tiny models themselves (``tiny_sd``, ``tiny_dino``) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

FIXTURES = Path(os.environ.get("SD4MATCH_FIXTURES", Path(__file__).parents[1] / "fixtures"))


def _dataset_trees():
    path = Path(__file__).parents[1] / "data" / "dataset_trees.py"
    spec = importlib.util.spec_from_file_location("sd4match_dataset_trees", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_components(tiny_sd: Path):
    """Fresh frozen SD components (a Trainer moves and may reconfigure them)."""
    from sd4match_sdk.models.loading import load_sd_components

    return lambda: load_sd_components(str(tiny_sd))


@pytest.fixture(scope="session")
def spair_root() -> Path:
    return FIXTURES / "SPair-71k"


@pytest.fixture(scope="session")
def pfwillow_root() -> Path:
    return FIXTURES / "pf-willow"


@pytest.fixture(scope="session")
def pfpascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset_trees().build_pfpascal_tree(tmp_path_factory.mktemp("pfpascal"), FIXTURES / "pf-pascal-csv")
