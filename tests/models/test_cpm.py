"""The Conditional Prompting Module's pieces: the exportable adaptive max pool and the parameter count (docs/design.md §4.4, §4.6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sd4match_sdk.models.cpm import ConditionalPromptModule, adaptive_max_pool1d


@pytest.mark.parametrize("length, out", [(256, 50), (10, 3), (7, 7), (50, 25)])
def test_adaptive_max_pool_equals_pytorch(length: int, out: int) -> None:
    x = torch.randn(2, 5, length)
    torch.testing.assert_close(adaptive_max_pool1d(x, out), nn.AdaptiveMaxPool1d(out)(x), atol=0, rtol=0)


def test_cpm_parameter_count() -> None:
    """docs/design.md §4.6: 1,767,680 trainable parameters for Pair-DINO-Feat-G25-C50 at SD 2.1 sizes."""
    assert sum(p.numel() for p in ConditionalPromptModule().parameters()) == 1_767_680
