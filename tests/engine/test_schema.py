"""Every manifest field is checked for type and range, and every path it names must stay inside the
engine directory, before anything is read (docs/design.md §13.15)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from sd4match_sdk import Matcher
from sd4match_sdk.engine.directory import read_manifest
from sd4match_sdk.engine.format import PROMPT_KINDS
from sd4match_sdk.engine.manifest import EngineManifest
from sd4match_sdk.errors import EngineError
from sd4match_sdk.prompts import PromptKind

FIX = "re-export the engine"


def manifest_of(engine: Path) -> dict:
    return json.loads((engine / "manifest.json").read_text())


def write(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(data))
    return directory


def unet_input(data: dict, name: str) -> dict:
    return next(t for t in data["graphs"]["unet"]["inputs"] if t["name"] == name)


def _set(path: str, value):
    """An edit ``data -> None`` that sets a dotted field."""

    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


# (edit, regex naming the field and the problem); each runs on a fresh copy of a real manifest.
SINGLE_EDITS = {
    "graphs-as-list": (_set("graphs", []), r"field 'graphs' must be a JSON object \(got list\)"),
    "max-batch-0": (_set("max_batch", 0), r"field 'max_batch' must be an integer >= 1 \(got 0\)"),
    "max-batch-bool": (_set("max_batch", True), r"field 'max_batch' must be an integer >= 1 \(got True\)"),
    "latent-shape-string": (_set("latent_shape", "4,32,32"), r"field 'latent_shape' must be a list of 3 positive integers"),
    "feature-shape-negative": (_set("feature_shape", [64, -16, 16]), r"field 'feature_shape' must be a list of 3 positive"),
    "ensemble-string": (_set("ensemble", "2"), r"field 'ensemble' must be an integer >= 1 \(got '2'\)"),
    "image-size-100": (_set("image_size", 100), r"field 'image_size' must be a multiple of 64 \(got 100\)"),
    "timestep-negative": (_set("timestep", -1), r"field 'timestep' must be an integer in \[0, 999\]"),
    "scaling-nan": (_set("scaling_factor", math.nan), r"field 'scaling_factor' must be a finite number"),
    "coefficients": (_set("noise_coefficients", [0.5, 0.5]), r"field 'noise_coefficients' \[0\.5, 0\.5\] are not sqrt\(abar_t\).*squares sum to 0\.5"),
    "engine-kind": (_set("engine", "openvino"), r"field 'engine' must be a string \(one of onnx, trt\)"),
    "precision": (_set("precision", "int8"), r"field 'precision' must be a string \(one of fp32, fp16\)"),
    "mode-table-on-single": (_set("context_mode", "table"), r"field 'context_mode' is 'table', which a single prompt cannot have"),
    "mode-input-on-single": (_set("context_mode", "input"), r"'input', which a single prompt cannot have"),
    "kind-cpm-on-fixed": (_set("prompt_kind", "cpm"), r"'fixed', which a cpm prompt cannot have"),
    "kind-unknown": (_set("prompt_kind", "lora"), r"field 'prompt_kind' must be a string \(one of text, single, class, cpm\)"),
    "categories-on-fixed": (_set("categories", ["cat"]), r"field 'categories' must be empty for context_mode 'fixed'"),
    "extra-graph": (lambda d: d["graphs"].update(evil=d["graphs"]["unet"]), r"field 'graphs' lists .*'evil'.* has exactly \['unet', 'vae_encoder'\]"),
    "missing-graph": (lambda d: d["graphs"].pop("vae_encoder"), r"field 'graphs' lists \['unet'\]"),
    "missing-input": (lambda d: d["graphs"]["unet"]["inputs"].pop(1), r"field 'graphs.unet' has inputs \['latents'\].*takes exactly \['latents', 'noise'\]"),
    "extra-input": (lambda d: d["graphs"]["unet"]["inputs"].append({"name": "x", "dtype": "float32", "shape": [1]}), r"takes exactly"),
    "input-dtype": (lambda d: unet_input(d, "noise").update(dtype="float16"), r"field 'graphs.unet.noise' has dtype float16; the runtime exchanges float32"),
    "spec-dtype-unknown": (lambda d: unet_input(d, "noise").update(dtype="complex64"), r"field 'dtype' must be a string \(one of float32"),
    "spec-shape-axis": (lambda d: unet_input(d, "noise").update(shape=["images", 2, 4, 32, 32]), r"must list positive integers or the axes"),
    "ensemble-edited": (_set("ensemble", 8), r"field 'graphs.unet.noise' has shape \['batch', 2, 4, 32, 32\], but the manifest's sizes give \['batch', 8, 4, 32, 32\]"),
    "image-size-edited": (_set("image_size", 512), r"latent_shape/feature_shape.* do not fit image_size 512"),
    "sha256": (lambda d: d["files"]["unet.onnx"].update(sha256="xyz"), r"field 'files.unet.onnx.sha256' must be 64 lowercase hex digits"),
    "bytes-negative": (lambda d: d["files"]["unet.onnx"].update(bytes=-1), r"field 'bytes' must be an integer >= 0"),
    "tensorrt": (_set("tensorrt", {"version": "10.0", "compute_capability": "sm90"}), r"field 'tensorrt.compute_capability' must look like '8\.9'"),
    "missing-field": (lambda d: d.pop("files"), r"field\(s\) files missing: the manifest is incomplete or malformed"),
    "not-an-object": (lambda d: d["graphs"].update(unet=["unet.onnx"]), r"field 'graphs.unet' must be a JSON object \(got list\)"),
}

# Paths: refused lexically, so nothing outside the directory is ever opened.
PATH_EDITS = {
    "absolute-file": (lambda d: d["files"].update({"/etc/passwd": d["files"]["unet.onnx"]}), r"names the path '/etc/passwd', which leaves the engine directory"),
    "climbing-file": (lambda d: d["files"].update({"../outside.onnx": d["files"]["unet.onnx"]}), r"'\.\./outside\.onnx', which leaves the engine directory"),
    "climbing-graph": (lambda d: (d["files"].update({"sub/../../unet.onnx": d["files"]["unet.onnx"]}), d["graphs"]["unet"].update(onnx="sub/../../unet.onnx")), r"'sub/\.\./\.\./unet\.onnx', which leaves"),
    "backslash": (lambda d: d["graphs"]["unet"].update(onnx="..\\unet.onnx"), r"engine paths are non-empty relative POSIX paths"),
    "drive": (lambda d: d["files"].update({"C:/unet.onnx": d["files"]["unet.onnx"]}), r"'C:/unet\.onnx', which leaves"),
    "empty-component": (lambda d: d["files"].update({"a//b": d["files"]["unet.onnx"]}), r"'a//b', which leaves"),
    "unlisted-data": (lambda d: d["graphs"]["unet"].update(onnx_data="unet.onnx.data"), r"field 'graphs.unet.onnx_data' names 'unet\.onnx\.data', which 'files' does not list"),
}


@pytest.mark.parametrize("name", sorted(SINGLE_EDITS) + sorted(PATH_EDITS))
def test_edited_single_manifest_is_refused(name, engine_single, tmp_path):
    edit, message = {**SINGLE_EDITS, **PATH_EDITS}[name]
    data = copy.deepcopy(manifest_of(engine_single))
    edit(data)
    with pytest.raises(EngineError, match=message) as info:
        read_manifest(write(tmp_path / "engine", data))
    assert "manifest.json" in str(info.value) and FIX in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["graphs"].pop("prompt_net"), r"field 'graphs' lists \['unet', 'vae_encoder'\]; a 'input' engine has exactly \['prompt_net'"),
        (lambda d: d["graphs"]["unet"]["inputs"].pop(2), r"'input' engine's unet takes exactly \['context', 'latents', 'noise'\]"),
        (lambda d: d["graphs"]["prompt_net"]["outputs"][0].update(shape=["pairs", 77, 48]), r"graphs.prompt_net.context' has shape"),
        (_set("context_mode", "fixed"), r"'fixed', which a cpm prompt cannot have"),
    ],
    ids=["cpm-without-prompt-net", "cpm-without-context-input", "context-widths-differ", "cpm-mode-edited"],
)
def test_edited_cpm_manifest_is_refused(edit, message, engine_cpm, tmp_path):
    data = copy.deepcopy(manifest_of(engine_cpm))
    edit(data)
    with pytest.raises(EngineError, match=message):
        read_manifest(write(tmp_path / "engine", data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("categories", []), r"field 'categories' must be a non-empty list of unique names for context_mode 'table'"),
        (_set("categories", ["cat", "cat", "dog"]), r"field 'categories' must be a non-empty list of unique names"),
        (_set("categories", ["cat", 3]), r"field 'categories' must be a non-empty list"),
        (lambda d: unet_input(d, "class_index").update(dtype="float32"), r"graphs.unet.class_index' has dtype float32; the runtime exchanges int64"),
        (_set("context_mode", "fixed"), r"'fixed', which a class prompt cannot have"),
    ],
    ids=["no-categories", "duplicate-categories", "non-string-category", "class-index-dtype", "class-mode-edited"],
)
def test_edited_class_manifest_is_refused(edit, message, engine_class, tmp_path):
    data = copy.deepcopy(manifest_of(engine_class))
    edit(data)
    with pytest.raises(EngineError, match=message):
        read_manifest(write(tmp_path / "engine", data))


def test_a_climbing_path_is_never_read(engine_single, copy_engine, tmp_path, monkeypatch):
    """One run hashed /etc/passwd: a path outside the directory is refused before any file is read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the engine")
    engine = copy_engine(engine_single)
    data = manifest_of(engine)
    data["files"]["../secret.txt"] = {"sha256": "0" * 64, "bytes": secret.stat().st_size}
    write(engine, data)
    hashed = []
    monkeypatch.setattr("sd4match_sdk.engine.directory.file_sha256", lambda path, *a: hashed.append(path) or "0" * 64)
    with pytest.raises(EngineError, match=r"'\.\./secret\.txt', which leaves the engine directory.*re-export"):
        Matcher.from_pretrained(str(engine))
    assert hashed == []


def test_manifest_size_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr("sd4match_sdk.engine.directory.MAX_MANIFEST_BYTES", 10)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "sd4match-engine", "x": "y" * 20}))
    with pytest.raises(EngineError, match=r"too large for an engine manifest; re-export"):
        read_manifest(tmp_path)


def test_real_manifests_pass_and_round_trip(engine_single, engine_class, engine_cpm, engine_fp16):
    for engine in (engine_single, engine_class, engine_cpm, engine_fp16):
        data = manifest_of(engine)
        assert json.loads(json.dumps(EngineManifest.from_dict(data).to_dict())) == data


def test_prompt_kinds_of_the_format_are_the_prompt_kinds():
    assert PROMPT_KINDS == tuple(k.value for k in PromptKind)
