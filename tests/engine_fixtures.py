"""Session fixtures for the engine and export tests: tiny models, prompts, and engine directories.

Exporting the tiny UNet takes ~15-20 s on this CPU, so each engine directory is written once per
session and shared. Tests that modify an engine work on a copy (:func:`copy_engine`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sd4match_sdk.config import FeatureConfig
from sd4match_sdk.models.cpm import ConditionalPromptModule, CPMConfig
from sd4match_sdk.prompts import PromptKind, PromptWeights, save_prompt

#: Small settings for the parity tests (768 is tested once, by the text engine).
SMALL = FeatureConfig(image_size=256, timestep=50, ensemble=2)
CLASS_NAMES = ("dog", "cat", "bird")


@pytest.fixture()
def copy_engine(tmp_path: Path):
    """``copy_engine(src) -> Path``: a fresh copy of an engine directory to modify."""

    def copy(src: Path) -> Path:
        dst = tmp_path / f"copy_{src.name}"
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def small_feature() -> FeatureConfig:
    """The feature settings of the small engines (256 px, t=50, E=2)."""
    return SMALL


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def export_tiny_sd(tiny_sd: Path) -> Path:
    """The shared tiny SD 2.1 (tests/conftest.py; transformers-4 text-encoder keys, as real SD 2.1)."""
    return tiny_sd


@pytest.fixture(scope="session")
def export_tiny_dino(tiny_dino: Path) -> Path:
    return tiny_dino


@pytest.fixture(scope="session")
def export_prompts(export_root: Path) -> dict[str, Path]:
    """Prompt files of every learned kind, sized for the tiny model (text width 32)."""
    g = torch.Generator().manual_seed(0)
    single = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.randn((1, 77, 32), generator=g)})
    classes = PromptWeights(
        PromptKind.CLASS, token_embeds={c: torch.randn((1, 77, 32), generator=g) for c in CLASS_NAMES}
    )
    torch.manual_seed(0)
    cpm = PromptWeights(
        PromptKind.CPM, cpm_state=ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32)).state_dict()
    )
    return {
        "single": save_prompt(export_root / "single.safetensors", single),
        "class": save_prompt(export_root / "class.safetensors", classes),
        "cpm": save_prompt(export_root / "cpm.safetensors", cpm),
    }


def _export(**kwargs) -> Path:
    from sd4match_sdk.export import ExportConfig, export_engine

    config = ExportConfig(**kwargs)
    export_engine(config, log=lambda *a, **k: None)
    return Path(config.out)


@pytest.fixture(scope="session")
def engine_single(export_root: Path, export_tiny_sd: Path, export_prompts: dict[str, Path]) -> Path:
    """Single prompt, written through the ``sd4match-export`` CLI (the CLI test checks its output)."""
    from sd4match_sdk.export.cli import main

    out = export_root / "engine_single"
    argv = [
        "--model", str(export_tiny_sd), "--prompt", str(export_prompts["single"]), "--out", str(out),
        "--engine", "onnx", "--dtype", "fp32", "--max-batch", "4", "--opset", "18",
        "--image-size", "256", "--ensemble", "2", "--timestep", "50", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def engine_class(export_root: Path, export_tiny_sd: Path, export_prompts: dict[str, Path]) -> Path:
    """Class prompt; max_batch 3 (requests are chunked) and external data forced for every graph."""
    return _export(
        model=str(export_tiny_sd), out=str(export_root / "engine_class"), prompt=str(export_prompts["class"]),
        feature=SMALL, max_batch=3, external_data_threshold=0,
    )  # fmt: skip


@pytest.fixture(scope="session")
def engine_cpm(
    export_root: Path, export_tiny_sd: Path, export_tiny_dino: Path, export_prompts: dict[str, Path]
) -> Path:
    return _export(
        model=str(export_tiny_sd), out=str(export_root / "engine_cpm"), prompt=str(export_prompts["cpm"]),
        dino=str(export_tiny_dino), feature=SMALL, max_batch=4,
    )  # fmt: skip


@pytest.fixture(scope="session")
def engine_text768(export_root: Path, export_tiny_sd: Path) -> Path:
    """The empty text prompt at the faithful 768 px frame (ensemble 1 to keep it fast)."""
    return _export(
        model=str(export_tiny_sd), out=str(export_root / "engine_text768"), prompt=None,
        feature=FeatureConfig(image_size=768, timestep=50, ensemble=1), max_batch=4,
    )  # fmt: skip


@pytest.fixture(scope="session")
def engine_fp16(export_root: Path, export_tiny_sd: Path, export_prompts: dict[str, Path]) -> Path:
    return _export(
        model=str(export_tiny_sd), out=str(export_root / "engine_fp16"), prompt=str(export_prompts["single"]),
        feature=SMALL, dtype="fp16", max_batch=4,
    )  # fmt: skip


@pytest.fixture(scope="session")
def euler_model(export_root: Path, export_tiny_sd: Path) -> Path:
    """The tiny SD 2.1 with a scheduler/ that names EulerDiscreteScheduler (same schedule as DDIM)."""
    import diffusers

    model = export_root / "tiny-sd21-euler"
    shutil.copytree(export_tiny_sd, model)
    config = diffusers.DDIMScheduler.load_config(str(model), subfolder="scheduler")
    diffusers.EulerDiscreteScheduler.from_config(config).save_pretrained(model / "scheduler")
    return model


@pytest.fixture(scope="session")
def engine_euler(export_root: Path, engine_single: Path, euler_model: Path) -> Path:
    """128 px, E=1, from the Euler directory, exported by the CLI with --overwrite over a killed
    export (engine files and a TensorRT timing cache, no manifest): one export serves the
    overwrite test (tests/export/test_cli.py) and the noising test (tests/export/test_writer.py)."""
    from sd4match_sdk.export.cli import main

    out = export_root / "engine_euler"
    shutil.copytree(engine_single, out)
    (out / "manifest.json").unlink()
    (out / "timing.cache").write_bytes(b"kept for TensorRT, not part of an ONNX export")
    argv = ["--model", str(euler_model), "--out", str(out), "--image-size", "128", "--ensemble", "1", "--overwrite", "--quiet"]
    assert main(argv) == 0
    return out
