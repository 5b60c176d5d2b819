"""``sd4match features``: one file per image, batched, seeded per image, skipping what is done (docs/design.md §13.18)."""

from __future__ import annotations

import shutil

import pytest
import torch

from sd4match_sdk import ImageFeatures, Matcher
from sd4match_sdk.cli import main
from sd4match_sdk.errors import ConfigError, ImageError
from sd4match_sdk.extraction import extract_feature_files, plan_jobs
from sd4match_sdk.noise import derive_seed
from sd4match_sdk.prompts import PromptKind, PromptWeights

SETTINGS = {"model": "tiny", "prompt": "", "timestep": 50, "ensemble": 2, "image_size": 256}


@pytest.fixture()
def folder(tmp_path, demo_pair):
    """Three images, one in a subfolder."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    shutil.copy(demo_pair[0], root / "a.png")
    shutil.copy(demo_pair[1], root / "sub" / "b.png")
    shutil.copy(demo_pair[0], root / "sub" / "c.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_plan_mirrors_the_folders(folder, tmp_path) -> None:
    jobs = plan_jobs([folder], tmp_path / "out")
    assert [(j.name, j.out.relative_to(tmp_path / "out").as_posix()) for j in jobs] == [
        ("a.png", "a.safetensors"), ("sub/b.png", "sub/b.safetensors"), ("sub/c.png", "sub/c.safetensors")]  # fmt: skip
    with pytest.raises(ConfigError, match="would both write"):
        plan_jobs([folder / "a.png", folder / "sub" / "c.png", folder / "sub" / "c.png"], tmp_path / "out")
    with pytest.raises(ImageError, match="not found"):
        plan_jobs([tmp_path / "missing.png"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        plan_jobs([tmp_path / "empty"], tmp_path / "out")


def test_files_do_not_depend_on_the_batch(matcher256, folder, tmp_path) -> None:
    jobs = plan_jobs([folder], tmp_path / "one")
    extract_feature_files(matcher256, jobs, SETTINGS, seed=7, batch_size=1, progress=False)
    batched = plan_jobs([folder], tmp_path / "three")
    report = extract_feature_files(matcher256, batched, SETTINGS, seed=7, batch_size=3, progress=False)
    assert len(report.written) == 3 and not report.skipped
    for a, b in zip(jobs, batched):
        fa, fb = ImageFeatures.load(a.out), ImageFeatures.load(b.out)
        torch.testing.assert_close(fa.features, fb.features, atol=1e-5, rtol=1e-5)
        assert fa.metadata["seed"] == "7" and fa.metadata["image"] == a.name and fa.metadata["ensemble"] == "2"
    # each image's noise is seeded from (seed, its name): the same as Matcher.features with that generator
    generator = torch.Generator().manual_seed(derive_seed(7, "image", "sub/b.png"))
    direct = matcher256.features(folder / "sub" / "b.png", generator=generator)
    torch.testing.assert_close(ImageFeatures.load(jobs[1].out).features, direct.features, atol=1e-5, rtol=1e-5)


def test_done_files_are_skipped_and_other_settings_refused(matcher256, folder, tmp_path) -> None:
    jobs = plan_jobs([folder], tmp_path / "out")
    extract_feature_files(matcher256, jobs[:2], SETTINGS, seed=0, progress=False)  # a run killed after two images
    report = extract_feature_files(matcher256, jobs, SETTINGS, seed=0, progress=False)
    assert report.written == [jobs[2].out] and report.skipped == [jobs[0].out, jobs[1].out]
    with pytest.raises(ConfigError, match=r"other settings: seed '0' \(now '1'\).*--overwrite"):
        extract_feature_files(matcher256, jobs, SETTINGS, seed=1, progress=False)
    again = extract_feature_files(matcher256, jobs, SETTINGS, seed=1, overwrite=True, progress=False)
    assert len(again.written) == 3


def test_cpm_prompts_have_no_per_image_features(tiny_sd, tiny_dino, folder, tmp_path) -> None:
    from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule

    cpm = PromptWeights(PromptKind.CPM, cpm_state=ConditionalPromptModule(CPMConfig(32, 32)).state_dict())
    matcher = Matcher.from_pretrained(str(tiny_sd), prompt=cpm, dino=str(tiny_dino), image_size=256, ensemble=1)
    with pytest.raises(ConfigError, match="CPM features depend on both images"):
        extract_feature_files(matcher, plan_jobs([folder], tmp_path / "out"), SETTINGS, progress=False)


def test_the_command(tiny_sd, folder, tmp_path, capsys) -> None:
    out = tmp_path / "features"
    args = ["features", str(folder), "--out", str(out), "--model", str(tiny_sd), "--image-size", "256",
            "--ensemble", "1", "--batch-size", "2", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "wrote 3 feature files" in capsys.readouterr().out
    loaded = ImageFeatures.load(out / "sub" / "b.safetensors")
    meta = loaded.metadata
    assert (meta["model"], meta["timestep"], meta["ensemble"], meta["image_size"], meta["seed"]) == (str(tiny_sd), "50", "1", "256", "0")
    from PIL import Image

    assert loaded.size == Image.open(folder / "sub" / "b.png").size  # the original size, for match_features
    assert main(args) == 0
    assert "wrote 0 feature files to" in (printed := capsys.readouterr().out) and "(3 already done)" in printed
    assert main([*args, "--prompt", "{category} photo"]) == 2
    assert "filled per category: pass --category" in capsys.readouterr().err
