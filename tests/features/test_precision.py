"""Precision policy: device defaults, and float32 exactness on CUDA without per-call flag flips (docs/design.md §13.20)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.features.precision import (
    Precision,
    check_exact_float32_convolutions,
    require_exact_float32_convolutions,
    resolve_precision,
)

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_defaults_follow_the_official_autocast_on_cuda_and_float32_on_cpu() -> None:
    assert resolve_precision(CUDA) == Precision(torch.float16, torch.float16)
    assert resolve_precision(CPU) == Precision(torch.float32, torch.float32)
    assert resolve_precision(CUDA, vae_dtype=torch.float32) == Precision(torch.float16, torch.float32)
    assert resolve_precision(CPU, dtype=torch.bfloat16) == Precision(torch.bfloat16, torch.float32)
    with pytest.raises(ConfigError, match="vae_dtype"):
        Precision(torch.float32, torch.int8)


def test_tf32_is_turned_off_once_at_build_and_only_read_per_call(monkeypatch) -> None:
    """The flag is process-global: written once when a float32 CUDA backend is built, never per call."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    require_exact_float32_convolutions(CUDA, Precision(torch.float16, torch.float16))
    assert torch.backends.cudnn.allow_tf32  # float16 only: nothing to protect
    require_exact_float32_convolutions(CPU, Precision())
    assert torch.backends.cudnn.allow_tf32
    require_exact_float32_convolutions(CUDA, Precision(torch.float16, torch.float32))
    assert not torch.backends.cudnn.allow_tf32
    check_exact_float32_convolutions(CUDA, Precision())  # a read: no warning, no write
    assert not torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # someone turns it back on
    with pytest.warns(UserWarning, match="allow_tf32 is True again"):
        check_exact_float32_convolutions(CUDA, Precision())
    assert torch.backends.cudnn.allow_tf32


def test_cpu_matcher_keeps_float32_and_the_flag(tiny_sd, monkeypatch) -> None:
    from sd4match_sdk import Matcher

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    m = Matcher.from_pretrained(str(tiny_sd), ensemble=1, image_size=128)
    assert m.backend.precision == Precision(torch.float32, torch.float32)
    assert m.backend.components.vae.dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    bf16 = Matcher.from_pretrained(str(tiny_sd), ensemble=1, image_size=128, dtype=torch.bfloat16, vae_dtype=torch.bfloat16)
    assert bf16.backend.components.vae.dtype == bf16.backend.components.unet.dtype == torch.bfloat16
    feats = bf16.features(__import__("numpy").zeros((64, 64, 3), "uint8"), seed=0).features
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
