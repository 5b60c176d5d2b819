"""The public surface: removing or renaming a name must be a deliberate change."""

import sd4match_sdk

EXPECTED = {
    "__version__", "Matcher", "MatchResult", "ImageFeatures", "FeatureConfig", "MatchConfig", "MatchMethod",
    "PromptKind", "PromptWeights", "load_prompt", "save_prompt", "SD4MatchError", "ConfigError", "ImageError",
    "PointsError", "PromptError", "UnknownCategoryError", "ModelNotFoundError", "WeightsError",
}


def test_public_names() -> None:
    assert set(sd4match_sdk.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(sd4match_sdk, name)
