"""Shared fixtures: tiny models written once per session and loaded through the real paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dataset_trees  # tests/data, on pytest's pythonpath

# Never reach for a hub during tests: everything is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

#: Session fixtures that write engine directories, shared by tests/engine and tests/export; the HTTP
#: server and prompt archives of the download tests.
pytest_plugins = ["engine_fixtures", "prompt_archives"]

FIXTURES = Path(os.environ.get("SD4MATCH_FIXTURES", Path(__file__).parent / "fixtures"))
DEMO = Path(__file__).parents[1] / "sd4match_sdk" / "assets" / "demo"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def trees():
    """The tree builders of ``tests/data/dataset_trees.py``."""
    return dataset_trees


@pytest.fixture(scope="session")
def spair_root() -> Path:
    return FIXTURES / "SPair-71k"


@pytest.fixture(scope="session")
def pfwillow_root() -> Path:
    return FIXTURES / "pf-willow"


@pytest.fixture(scope="session")
def pfpascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small PF-Pascal tree in the native layout, built from the real pair csvs."""
    return dataset_trees.build_pfpascal_tree(tmp_path_factory.mktemp("pfpascal"), FIXTURES / "pf-pascal-csv")


@pytest.fixture(scope="session")
def demo_pair() -> tuple[Path, Path]:
    return DEMO / "dift_cat_src.png", DEMO / "dift_cat_trg.png"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny SD-2.1-shaped pipeline whose text encoder uses transformers-4 key names, as real SD 2.1."""
    from sd4match_sdk.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd21", v4_text_encoder_keys=True)


@pytest.fixture(scope="session")
def tiny_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd4match_sdk.testing import build_tiny_dino

    return build_tiny_dino(tmp_path_factory.mktemp("models") / "tiny-dinov2")


@pytest.fixture(scope="session")
def sd_components(tiny_sd: Path):
    from sd4match_sdk.models.loading import load_sd_components

    return load_sd_components(str(tiny_sd))


@pytest.fixture(scope="session")
def matcher256(tiny_sd: Path):
    """Empty-prompt matcher at 256 px (16x16 grid), ensemble 2: fast enough for many tests."""
    from sd4match_sdk import Matcher

    return Matcher.from_pretrained(str(tiny_sd), ensemble=2, image_size=256)
