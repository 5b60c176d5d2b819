"""An engine directory: its manifest's content, the round trip, and the refusals before it runs (docs/design.md §13.10)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk._version import __version__
from sd4match_sdk.errors import EngineError
from sd4match_sdk.engine.directory import (
    check_sdk_compatible,
    file_sha256,
    parse_version,
    read_manifest,
    verify_files,
    write_manifest,
)
from sd4match_sdk.engine.format import FORMAT_VERSION
from sd4match_sdk.engine.manifest import EngineManifest


def _edit_manifest(engine: Path, **changes) -> None:
    path = engine / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class TestContent:
    def test_fields_of_a_single_engine(self, engine_single):
        data = json.loads((engine_single / "manifest.json").read_text())
        assert data["format"] == "sd4match-engine" and data["format_version"] == FORMAT_VERSION
        assert data["sdk_version"] == __version__
        assert (data["engine"], data["precision"], data["prompt_kind"], data["context_mode"]) == (
            "onnx",
            "fp32",
            "single",
            "fixed",
        )
        assert (data["image_size"], data["timestep"], data["ensemble"], data["max_batch"], data["opset"]) == (
            256,
            50,
            2,
            4,
            18,
        )
        assert data["latent_shape"] == [4, 32, 32] and data["feature_shape"] == [64, 16, 16]
        assert data["scaling_factor"] == pytest.approx(0.18215)
        # docs/design.md §3.3: t=50 gives add_noise coefficients (0.97549, 0.22005)
        assert data["noise_coefficients"] == pytest.approx([0.97549, 0.22005], abs=1e-5)
        for lib in ("torch", "onnx", "onnxruntime", "diffusers", "transformers"):
            assert data["libraries"][lib]
        assert "tensorrt" not in data
        assert data["preprocessing"]["sd_image"]["resize"] == [256, 256]

    def test_graph_tensors(self, engine_single):
        manifest = read_manifest(engine_single)
        assert set(manifest.graphs) == {"vae_encoder", "unet"}
        vae, unet = manifest.graphs["vae_encoder"], manifest.graphs["unet"]
        assert [(s.name, s.dtype, s.shape) for s in vae.inputs] == [
            ("pixels", "float32", ("batch", 3, 256, 256)),
            ("eps_vae", "float32", ("batch", 4, 32, 32)),
        ]
        assert [(s.name, s.shape) for s in vae.outputs] == [("latents", ("batch", 4, 32, 32))]
        assert [(s.name, s.shape) for s in unet.inputs] == [
            ("latents", ("batch", 4, 32, 32)),
            ("noise", ("batch", 2, 4, 32, 32)),
        ]
        assert [(s.name, s.dtype, s.shape) for s in unet.outputs] == [
            ("features", "float32", ("batch", 64, 16, 16)),
            ("features_normalized", "float32", ("batch", 64, 16, 16)),
        ]
        assert all(s.description for s in (*vae.inputs, *unet.inputs, *unet.outputs))
        assert unet.inputs[1].dynamic_axes == {0: "batch"}

    def test_class_and_cpm_inputs(self, engine_class, engine_cpm):
        cls = read_manifest(engine_class)
        assert cls.categories == ("bird", "cat", "dog") and cls.context_mode == "table"
        index = cls.graphs["unet"].inputs[2]
        assert (index.name, index.dtype, index.shape) == ("class_index", "int64", ("batch",))
        assert cls.graphs["unet"].onnx_data == "unet.onnx.data" and "unet.onnx.data" in cls.files
        cpm = read_manifest(engine_cpm)
        assert cpm.context_mode == "input" and cpm.categories == ()
        context = cpm.graphs["unet"].inputs[2]
        assert (context.name, context.shape) == ("context", ("batch", 77, 32))
        net = cpm.graphs["prompt_net"]
        assert [(s.name, s.shape) for s in net.inputs] == [
            ("dino_source", ("pairs", 3, 224, 224)),
            ("dino_target", ("pairs", 3, 224, 224)),
        ]
        assert [(s.name, s.shape) for s in net.outputs] == [("context", ("pairs", 77, 32))]
        assert "dino_processor/preprocessor_config.json" in cpm.files
        assert cpm.preprocessing["dino_image"]["center_crop"] == [224, 224]

    def test_every_file_is_hashed(self, engine_class):
        manifest = read_manifest(engine_class)
        on_disk = {p.relative_to(engine_class).as_posix() for p in engine_class.rglob("*") if p.is_file()} - {
            "manifest.json"
        }
        assert set(manifest.files) == on_disk
        for name, entry in manifest.files.items():
            content = (engine_class / name).read_bytes()
            assert entry.sha256 == hashlib.sha256(content).hexdigest() and entry.bytes == len(content)

    def test_round_trip(self, engine_cpm, tmp_path):
        manifest = read_manifest(engine_cpm)
        write_manifest(tmp_path, manifest)
        assert read_manifest(tmp_path) == manifest
        assert EngineManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


class TestRefusals:
    def test_modified_file(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        path = engine / "vae_encoder.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other content
        path.write_bytes(bytes(data))
        with pytest.raises(EngineError, match=r"vae_encoder\.onnx.*differs from its manifest \(sha256 .*Rebuild"):
            Matcher.from_pretrained(str(engine))

    def test_truncated_external_data(self, engine_class, copy_engine):
        engine = copy_engine(engine_class)
        path = engine / "unet.onnx.data"
        path.write_bytes(path.read_bytes()[:-16])
        with pytest.raises(EngineError, match=r"unet\.onnx\.data.*bytes, the manifest says"):
            Matcher.from_pretrained(str(engine))

    def test_missing_file(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        (engine / "unet.onnx").unlink()
        with pytest.raises(EngineError, match=r"unet\.onnx.*is missing"):
            Matcher.from_pretrained(str(engine))

    def test_unknown_format_version(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        _edit_manifest(engine, format_version=FORMAT_VERSION + 1)
        with pytest.raises(EngineError, match=f"format version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"):
            Matcher.from_pretrained(str(engine))

    def test_newer_sdk(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        _edit_manifest(engine, sdk_version="99.0.0")
        with pytest.raises(EngineError, match="newer than this SDK.*upgrade"):
            Matcher.from_pretrained(str(engine))

    def test_incompatible_sdk_series(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        major, minor, _ = parse_version(__version__)
        older = f"{major}.{minor - 1}.0" if major == 0 else f"{major - 1}.0.0"
        _edit_manifest(engine, sdk_version=older)
        with pytest.raises(EngineError, match="does not read"):
            Matcher.from_pretrained(str(engine))

    def test_not_an_engine_manifest(self, tmp_path):
        (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
        with pytest.raises(EngineError, match="not an sd4match engine manifest"):
            Matcher.from_pretrained(str(tmp_path))
        (tmp_path / "manifest.json").write_text("{not json")
        with pytest.raises(EngineError, match="cannot read"):
            read_manifest(tmp_path)

    def test_manifest_missing_keys(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        data = json.loads((engine / "manifest.json").read_text())
        del data["graphs"]
        (engine / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(EngineError, match="incomplete or malformed"):
            read_manifest(engine)

    def test_unlisted_file_is_refused(self, engine_single):
        manifest = read_manifest(engine_single)
        with pytest.raises(EngineError, match="not listed"):
            verify_files(engine_single, manifest, ["extra.onnx"])


class TestSdkVersionRules:
    @pytest.mark.parametrize(
        "written, running",
        [("1.2.0", "1.2.0"), ("1.2.0", "1.3.1"), ("1.0.0", "1.9.0"), ("0.1.0", "0.1.5"), ("0.1.0.dev1", "0.1.0")],
    )
    def test_compatible(self, written, running):
        check_sdk_compatible(written, running)

    @pytest.mark.parametrize(
        "written, running, message",
        [
            ("1.3.0", "1.2.0", "newer"),
            ("2.0.0", "1.9.0", "newer"),
            ("1.9.0", "2.0.0", "does not read"),
            ("0.1.0", "0.2.0", "does not read"),
            ("0.2.0", "0.1.0", "newer"),
        ],
    )
    def test_incompatible(self, written, running, message):
        with pytest.raises(EngineError, match=message):
            check_sdk_compatible(written, running)

    def test_parse_version(self):
        assert parse_version("1.2.3") == (1, 2, 3)
        assert parse_version("0.1") == (0, 1, 0)
        assert parse_version("2.0.0rc1") == (2, 0, 0)
        with pytest.raises(EngineError):
            parse_version("unknown")


def _features(engine: Path):
    from sd4match_sdk.demo import demo_images

    return Matcher.from_pretrained(str(engine)).features(demo_images()[0], seed=0).features


class TestSymlinkPolicy:
    """docs/design.md §13.15: links may stay inside the engine, or point into a hub cache's blobs/."""

    def test_a_link_to_a_file_outside_is_refused(self, engine_single, copy_engine, tmp_path):
        engine = copy_engine(engine_single)
        outside = tmp_path / "elsewhere.onnx"
        (engine / "vae_encoder.onnx").rename(outside)
        (engine / "vae_encoder.onnx").symlink_to(outside)
        with pytest.raises(EngineError, match=r"vae_encoder\.onnx' is a symlink to .*elsewhere\.onnx', outside the engine directory.*copy the engine as plain files"):
            Matcher.from_pretrained(str(engine))

    def test_a_link_to_a_system_file_is_refused_before_it_is_hashed(self, engine_single, copy_engine, monkeypatch):
        engine = copy_engine(engine_single)
        (engine / "unet.onnx").unlink()
        (engine / "unet.onnx").symlink_to("/etc/passwd")
        hashed, real = [], file_sha256
        monkeypatch.setattr("sd4match_sdk.engine.directory.file_sha256", lambda path, *a: hashed.append(path) or real(path))
        with pytest.raises(EngineError, match=r"unet\.onnx' is a symlink to '/etc/passwd', outside the engine directory"):
            Matcher.from_pretrained(str(engine), engine_runtime="onnxruntime")
        assert not any("passwd" in str(p) for p in hashed)

    def test_a_folder_that_leaves_the_directory_is_refused(self, engine_cpm, copy_engine, tmp_path):
        engine = copy_engine(engine_cpm)
        outside = tmp_path / "processor"
        (engine / "dino_processor").rename(outside)
        (engine / "dino_processor").symlink_to(outside, target_is_directory=True)
        with pytest.raises(EngineError, match=r"lies in a folder that resolves outside the engine directory.*copy the engine as plain files"):
            Matcher.from_pretrained(str(engine))

    def test_a_folder_where_a_file_belongs_is_refused(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        (engine / "unet.onnx").unlink()
        (engine / "unet.onnx").mkdir()
        with pytest.raises(EngineError, match=r"unet\.onnx' is not a regular file; copy the whole engine directory"):
            Matcher.from_pretrained(str(engine))

    def test_links_inside_the_directory_are_followed(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        (engine / "store").mkdir()
        (engine / "vae_encoder.onnx").rename(engine / "store" / "vae_encoder.onnx")
        (engine / "vae_encoder.onnx").symlink_to("store/vae_encoder.onnx")
        assert torch.equal(_features(engine), _features(engine_single))

    def test_a_hub_cache_snapshot_runs(self, engine_class, tmp_path):
        """The layout huggingface_hub writes: snapshots/<rev>/<file> -> ../../blobs/<sha256>."""
        repo = tmp_path / "hub" / "models--someone--engine"
        snapshot, blobs = repo / "snapshots" / "0123abc", repo / "blobs"
        blobs.mkdir(parents=True)
        for path in sorted(p for p in engine_class.rglob("*") if p.is_file()):
            name = path.relative_to(engine_class)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copyfile(path, blobs / digest)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blobs / digest, link.parent))
        assert (snapshot / "unet.onnx.data").is_symlink()
        from sd4match_sdk.demo import demo_images

        got = Matcher.from_pretrained(str(snapshot)).features(demo_images()[0], category="cat", seed=0).features
        expected = Matcher.from_pretrained(str(engine_class)).features(demo_images()[0], category="cat", seed=0).features
        assert torch.equal(got, expected)


class TestUnfinishedExport:
    def test_a_directory_without_its_manifest_holds_no_complete_engine(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        (engine / "manifest.json").unlink()  # the exporter writes it last: a killed export has none
        with pytest.raises(EngineError, match=r"holds no complete engine: it has engine files but no manifest\.json .*export it again: sd4match-export --out .* --overwrite"):
            Matcher.from_pretrained(str(engine))
        with pytest.raises(EngineError, match=r"holds no complete engine: manifest\.json is missing \(it holds engine files: the export did not finish\); re-export"):
            read_manifest(engine)

    def test_an_empty_directory_is_not_an_engine(self, tmp_path):
        with pytest.raises(EngineError, match=r"holds no complete engine: manifest\.json is missing; re-export"):
            read_manifest(tmp_path)


def test_the_manifest_has_normal_permissions(engine_single):
    import stat

    assert stat.S_IMODE((engine_single / "manifest.json").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    previous = os.umask(0)
    os.umask(previous)
    return previous
