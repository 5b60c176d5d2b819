"""Fixtures for the dataset loader tests: the real fixture trees and a built PF-Pascal tree."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

FIXTURES = Path(os.environ.get("SD4MATCH_FIXTURES", Path(__file__).parents[1] / "fixtures"))


def load_dataset_trees():
    """``tests/data/dataset_trees.py`` as a module (test folders are not packages)."""
    spec = importlib.util.spec_from_file_location("sd4match_dataset_trees", Path(__file__).with_name("dataset_trees.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trees():
    """The tree builders of ``dataset_trees.py``."""
    return load_dataset_trees()


@pytest.fixture(scope="session")
def fixtures_root() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def spair_root() -> Path:
    return FIXTURES / "SPair-71k"


@pytest.fixture(scope="session")
def pfwillow_root() -> Path:
    return FIXTURES / "pf-willow"


@pytest.fixture(scope="session")
def pfpascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trees = load_dataset_trees()
    return trees.build_pfpascal_tree(tmp_path_factory.mktemp("pfpascal"), FIXTURES / "pf-pascal-csv")
