"""What the .onnx files really load is verified, and the runtimes' errors name the file (docs/design.md §13.15).

Each test edits a copy of a session engine the way a hostile or careless sender could, with the
manifest re-hashed where needed so that only the check under test can catch it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.engine.graph_files import read_onnx_graph
from sd4match_sdk.engine.onnxrt import OnnxRuntimeRunner
from sd4match_sdk.errors import EngineError


def edit_manifest(engine: Path, edit) -> None:
    path = engine / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rehash(engine: Path, name: str) -> None:
    """Make the manifest describe ``name`` as it now is (what a tamperer with the manifest does)."""
    content = (engine / name).read_bytes()

    def edit(data):
        data["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}

    edit_manifest(engine, edit)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class TestExternalData:
    def test_the_data_files_are_those_the_onnx_references(self, engine_class):
        info = read_onnx_graph(engine_class / "unet.onnx")
        assert info.external_data == ("unet.onnx.data",)
        assert [name for name, _, _ in info.inputs] == ["latents", "noise", "class_index"]

    def test_a_manifest_without_the_data_entry_cannot_let_modified_data_through(self, engine_class, copy_engine):
        engine = copy_engine(engine_class)
        flip_a_byte(engine / "unet.onnx.data")

        def drop(data):
            data["graphs"]["unet"]["onnx_data"] = None
            del data["files"]["unet.onnx.data"]

        edit_manifest(engine, drop)
        with pytest.raises(EngineError, match=r"'unet\.onnx\.data' is used by the engine but not listed in its manifest, so it cannot be verified; re-export"):
            Matcher.from_pretrained(str(engine))

    def test_data_listed_but_not_declared_is_still_verified(self, engine_class, copy_engine):
        engine = copy_engine(engine_class)
        flip_a_byte(engine / "vae_encoder.onnx.data")
        edit_manifest(engine, lambda d: d["graphs"]["vae_encoder"].update(onnx_data=None))
        with pytest.raises(EngineError, match=r"vae_encoder\.onnx\.data' differs from its manifest.*Rebuild the engine"):
            Matcher.from_pretrained(str(engine))

    @pytest.mark.parametrize("location", ["../unet.onnx.data", "/etc/passwd", "sub/../../x.data"])
    def test_a_location_outside_the_directory_is_refused(self, engine_class, copy_engine, location):
        engine = copy_engine(engine_class)
        model = onnx.load(str(engine / "unet.onnx"), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(engine / "unet.onnx"))
        rehash(engine, "unet.onnx")
        with pytest.raises(EngineError, match=rf"unet\.onnx' references external data '{location}', which leaves the engine directory; refusing to load it"):
            Matcher.from_pretrained(str(engine))


class TestInterface:
    def test_manifest_that_drops_the_class_input_is_refused(self, engine_class, copy_engine):
        """Edited into a consistent fixed-context manifest: only the graph's real inputs tell."""
        engine = copy_engine(engine_class)

        def to_fixed(data):
            data.update(prompt_kind="single", context_mode="fixed", categories=[])
            data["graphs"]["unet"]["inputs"] = [t for t in data["graphs"]["unet"]["inputs"] if t["name"] != "class_index"]

        edit_manifest(engine, to_fixed)
        with pytest.raises(EngineError, match=r"unet\.onnx': its unet inputs are \['class_index', 'latents', 'noise'\] but the manifest says \['latents', 'noise'\].*Re-export"):
            Matcher.from_pretrained(str(engine))

    def test_an_edited_ensemble_is_refused_at_open(self, engine_single, copy_engine):
        """ensemble and the noise input edited together (consistent manifest): the .onnx disagrees."""
        engine = copy_engine(engine_single)

        def ensemble_8(data):
            data["ensemble"] = 8
            next(t for t in data["graphs"]["unet"]["inputs"] if t["name"] == "noise")["shape"][1] = 8

        edit_manifest(engine, ensemble_8)
        with pytest.raises(EngineError, match=r"unet\.onnx': its unet input 'noise' is float32 \['batch', 2, 4, 32, 32\] but the manifest says float32 \['batch', 8, 4, 32, 32\] \(e\.g\. an edited ensemble"):
            Matcher.from_pretrained(str(engine))


class TestRuntimeErrors:
    def test_a_graph_onnx_runtime_cannot_open(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        model = onnx.load(str(engine / "unet.onnx"))
        model.graph.node[len(model.graph.node) // 2].op_type = "NoSuchOperator"
        onnx.save(model, str(engine / "unet.onnx"))
        rehash(engine, "unet.onnx")
        with pytest.raises(EngineError, match=r"ONNX Runtime could not open '.*unet\.onnx' \(.*NoSuchOperator.*re-export the engine"):
            Matcher.from_pretrained(str(engine))

    def test_a_file_that_is_not_onnx(self, engine_single, copy_engine):
        engine = copy_engine(engine_single)
        (engine / "vae_encoder.onnx").write_bytes(b"\x08\x07not a protobuf at all" * 10)
        rehash(engine, "vae_encoder.onnx")
        with pytest.raises(EngineError, match=r"vae_encoder\.onnx' is not a readable ONNX model .*re-export the engine"):
            Matcher.from_pretrained(str(engine))

    def test_a_run_error_names_the_file(self, engine_single):
        runner = OnnxRuntimeRunner(engine_single / "vae_encoder.onnx", ["CPUExecutionProvider"])
        with pytest.raises(EngineError, match=r"(?s)ONNX Runtime could not run '.*vae_encoder\.onnx' \(InvalidArgument.*re-export the engine"):
            runner.run({"pixels": torch.zeros(1, 3, 8, 8), "eps_vae": torch.zeros(1, 4, 1, 1)})


def test_an_unlisted_file_in_the_dino_processor_folder_is_refused(engine_cpm, copy_engine):
    """transformers reads what it finds there (e.g. a processor_config.json): all of it must be verified."""
    engine = copy_engine(engine_cpm)
    (engine / "dino_processor" / "processor_config.json").write_text('{"image_processor": {"crop_size": 1}}')
    with pytest.raises(EngineError, match=r"'dino_processor/processor_config\.json' is used by the engine but not listed in its manifest"):
        Matcher.from_pretrained(str(engine))


def test_a_modified_dino_processor_config_is_refused(engine_cpm, copy_engine):
    engine = copy_engine(engine_cpm)
    path = engine / "dino_processor" / "preprocessor_config.json"
    path.write_text(path.read_text().replace("224", "225"))
    with pytest.raises(EngineError, match=r"preprocessor_config\.json' differs from its manifest"):
        Matcher.from_pretrained(str(engine))
