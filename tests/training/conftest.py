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
