"""Fixtures for the training and evaluation tests: fresh tiny-model components.

The tiny models (``tiny_sd``, ``tiny_dino``) and the dataset trees (``spair_root``,
``pfwillow_root``, ``pfpascal_root``) come from ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def load_components(tiny_sd: Path):
    """Fresh frozen SD components (a Trainer moves and may reconfigure them)."""
    from sd4match_sdk.models.loading import load_sd_components

    return lambda: load_sd_components(str(tiny_sd))



@pytest.fixture(scope="session")
def reference_trajectory(tiny_sd: Path, spair_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The learned prompt after each of 3 steps of one uninterrupted process (``training_runs``)."""
    import training_runs  # tests/, on pytest's pythonpath

    return training_runs.reference_trajectory(tiny_sd, spair_root, tmp_path_factory.mktemp("reference"))
