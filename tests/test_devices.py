"""``--device auto`` everywhere: CUDA when torch sees a GPU, else the CPU (docs/design.md §13.19)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.checks import resolve_device


def test_auto_and_explicit_devices() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="invalid device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device.*use device='cpu'"):
            resolve_device("cuda")


def test_the_matcher_takes_auto(tiny_sd) -> None:
    matcher = Matcher.from_pretrained(str(tiny_sd), device="auto", image_size=256, ensemble=1)
    assert matcher.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
