"""The public surface: removing or renaming a name must be a deliberate change.

``tests/api_surface.json`` lists the ``__all__`` of every public module. A change to the API shows
up there as a diff in review; regenerate the file only on purpose.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

SURFACE = json.loads((Path(__file__).parent / "api_surface.json").read_text())

ROOT_NAMES = {
    "__version__", "Matcher", "MatchResult", "ImageFeatures", "FeatureConfig", "MatchConfig", "MatchMethod",
    "PromptKind", "PromptWeights", "load_prompt", "save_prompt", "SD4MatchError", "ConfigError", "ImageError",
    "PointsError", "PromptError", "UnknownCategoryError", "ModelNotFoundError", "WeightsError",
}  # fmt: skip


def test_root_names() -> None:
    import sd4match_sdk

    assert set(sd4match_sdk.__all__) == ROOT_NAMES == set(SURFACE["sd4match_sdk"])


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_module_surface(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == SURFACE[module]
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_documented_imports() -> None:
    """The imports README.md and docs/ show."""
    from sd4match_sdk import Matcher  # noqa: F401
    from sd4match_sdk.engine import read_manifest  # noqa: F401
    from sd4match_sdk.export import ExportConfig, export_engine, read_manifest as export_read_manifest  # noqa: F401
    from sd4match_sdk.noise import NOISE_FILES, save_pair_noise  # noqa: F401
    from sd4match_sdk.ops.matching import match_points  # noqa: F401
    from sd4match_sdk.testing import build_tiny_sd  # noqa: F401
