"""TensorRT plans: what can honestly be checked without TensorRT.

The TensorRT builder is not installable from the registries this CI reaches (PyPI's ``tensorrt``
is a stub), so the build itself (:func:`~sd4match_sdk.export.plans.build_plan`, the runtime's
runners) is labelled unverified and tested only by ``test_real_tensorrt_build_matches_torch``,
which skips without TensorRT and a GPU. Here: the plan settings derived from a manifest and the
manifest after a build (pure functions), and the refusal rules an engine with plans meets when
it is opened (another GPU, another TensorRT, a modified plan, plans on the CPU). No test records
or replays calls to the TensorRT API.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.engine.directory import check_plan_compatibility, hash_directory, read_manifest, write_manifest
from sd4match_sdk.engine.format import onnx_data_file, onnx_file, plan_file
from sd4match_sdk.engine.manifest import TensorRTInfo, TensorSpec
from sd4match_sdk.errors import BackendUnavailableError, ConfigError, EngineError
from sd4match_sdk.export.plans import add_tensorrt_plans, plan_settings, plans_manifest, profile_shapes
from sd4match_sdk.runtimes import import_tensorrt


def _tensorrt_installed() -> bool:
    try:
        import_tensorrt()
    except BackendUnavailableError:
        return False
    return True


def _unet_inputs() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("latents", "float32", ("batch", 4, 96, 96)),
        TensorSpec("noise", "float32", ("batch", 8, 4, 96, 96)),
        TensorSpec("class_index", "int64", ("batch",)),
    )


class TestNamesAndProfiles:
    def test_file_names(self):
        assert (onnx_file("unet"), onnx_data_file("unet"), plan_file("unet")) == (
            "unet.onnx",
            "unet.onnx.data",
            "unet.plan",
        )
        assert plan_file("prompt_net") == "prompt_net.plan"

    def test_unet_profile(self):
        profile = profile_shapes(_unet_inputs(), max_batch=16, opt_batch=2)
        assert profile["latents"] == {"min": [1, 4, 96, 96], "opt": [2, 4, 96, 96], "max": [16, 4, 96, 96]}
        assert profile["noise"] == {"min": [1, 8, 4, 96, 96], "opt": [2, 8, 4, 96, 96], "max": [16, 8, 4, 96, 96]}
        assert profile["class_index"] == {"min": [1], "opt": [2], "max": [16]}

    def test_prompt_net_profile_tunes_for_one_pair(self):
        spec = TensorSpec("dino_source", "float32", ("pairs", 3, 224, 224))
        assert profile_shapes((spec,), max_batch=8, opt_batch=2)["dino_source"] == {
            "min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [8, 3, 224, 224],
        }  # fmt: skip

    def test_static_input_and_unknown_axis(self):
        assert profile_shapes((TensorSpec("x", "float32", (1, 2)),), 4, 2)["x"] == {
            "min": [1, 2],
            "opt": [1, 2],
            "max": [1, 2],
        }
        with pytest.raises(EngineError, match="unknown_axis|dynamic axes"):
            profile_shapes((TensorSpec("x", "float32", ("unknown_axis", 2)),), 4, 2)


class TestCompatibility:
    INFO = TensorRTInfo(version="10.3.0", compute_capability="8.6", device_name="NVIDIA A10")

    def test_same_gpu_and_version(self):
        check_plan_compatibility(self.INFO, "8.6", "10.3.0")

    def test_other_gpu(self):
        with pytest.raises(
            EngineError, match=r"compute capability 8\.6 \(NVIDIA A10\).*has compute capability 9\.0.*rebuild"
        ):
            check_plan_compatibility(self.INFO, "9.0", "10.3.0")

    def test_other_tensorrt_version(self):
        with pytest.raises(EngineError, match=r"built with TensorRT 10\.3\.0.*has TensorRT 10\.7\.0.*rebuild"):
            check_plan_compatibility(self.INFO, "8.6", "10.7.0")

    def test_missing_section(self):
        with pytest.raises(EngineError, match="no 'tensorrt' section"):
            check_plan_compatibility(None, "8.6", "10.3.0")


class TestPlanSettings:
    """What would be handed to TensorRT, derived from a real engine's manifest."""

    def test_one_plan_per_graph_from_its_onnx_file(self, engine_class):
        manifest = read_manifest(engine_class)
        settings = plan_settings(manifest, workspace_gib=2)
        assert sorted(settings) == sorted(manifest.graphs)
        for name, graph in settings.items():
            assert (graph.onnx, graph.plan) == (manifest.graphs[name].onnx, f"{name}.plan")
            assert graph.strongly_typed and graph.timing_cache == "timing.cache"
            assert graph.workspace_bytes == 2 << 30
            assert graph.profile == profile_shapes(manifest.graphs[name].inputs, manifest.max_batch, 2)

    def test_profiles_span_one_to_max_batch_and_tune_for_one_pair(self, engine_class):
        settings = plan_settings(read_manifest(engine_class))  # max_batch 3
        assert settings["unet"].profile["class_index"] == {"min": [1], "opt": [2], "max": [3]}
        assert settings["vae_encoder"].profile["pixels"] == {
            "min": [1, 3, 256, 256], "opt": [2, 3, 256, 256], "max": [3, 3, 256, 256],
        }  # fmt: skip

    def test_bad_opt_batch_and_workspace(self, engine_class):
        manifest = read_manifest(engine_class)
        with pytest.raises(ConfigError, match=r"opt_batch must lie in \[1, max_batch=3\]"):
            plan_settings(manifest, opt_batch=4)
        with pytest.raises(ConfigError, match="workspace"):
            plan_settings(manifest, workspace_gib=0)

    def test_manifest_after_the_build(self, engine_class):
        manifest = read_manifest(engine_class)
        settings = plan_settings(manifest)
        after = plans_manifest(manifest, settings, "10.99.0", "8.9", "Fake GPU", manifest.files)
        assert after.engine == "trt" and after.libraries["tensorrt"] == "10.99.0"
        assert after.tensorrt == TensorRTInfo("10.99.0", "8.9", "Fake GPU", True, {n: s.profile for n, s in settings.items()})
        assert {n: g.plan for n, g in after.graphs.items()} == {n: f"{n}.plan" for n in manifest.graphs}
        assert {n: g.onnx for n, g in after.graphs.items()} == {n: g.onnx for n, g in manifest.graphs.items()}


def _with_plans(engine: Path, version: str = "10.99.0", compute_capability: str = "8.9") -> Path:
    """``engine`` as ``add_tensorrt_plans`` leaves it, with stand-in plan bytes (no TensorRT here)."""
    manifest = read_manifest(engine)
    settings = plan_settings(manifest)
    for graph in settings.values():
        (engine / graph.plan).write_bytes(b"not a real plan")
    (engine / "timing.cache").write_bytes(b"")
    write_manifest(engine, plans_manifest(manifest, settings, version, compute_capability, "Fake GPU", hash_directory(engine)))
    return engine


@pytest.fixture()
def tensorrt_machine(monkeypatch):
    """A machine that reports TensorRT 10.99.0 and a GPU of compute capability 8.9 (checks only:
    nothing here builds or runs a plan)."""
    monkeypatch.setattr("sd4match_sdk.engine.tensorrt.import_tensorrt", lambda: types.SimpleNamespace(__version__="10.99.0"))
    monkeypatch.setattr("sd4match_sdk.engine.tensorrt.cuda_compute_capability", lambda device=None: ("8.9", "Fake GPU"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device="cuda" is checked before the engine opens
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


class TestOpeningPlans:
    """The refusal rules an engine with plans meets before any plan is deserialized."""

    def test_plans_for_another_gpu_are_refused(self, engine_class, copy_engine, tensorrt_machine):
        engine = _with_plans(copy_engine(engine_class), compute_capability="9.0")
        with pytest.raises(EngineError, match=r"compute capability 9\.0.*this GPU has compute capability 8\.9"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_plans_for_another_tensorrt_are_refused(self, engine_class, copy_engine, tensorrt_machine):
        engine = _with_plans(copy_engine(engine_class), version="10.1.0")
        with pytest.raises(EngineError, match=r"TensorRT 10\.1\.0.*this machine has TensorRT 10\.99\.0"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_modified_plan_is_refused(self, engine_class, copy_engine, tensorrt_machine):
        engine = _with_plans(copy_engine(engine_class))
        (engine / "unet.plan").write_bytes(b"modified")
        with pytest.raises(EngineError, match=r"unet\.plan.*differs from its manifest"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_plans_need_a_cuda_device_and_the_onnx_graphs_still_run(self, engine_class, copy_engine, tensorrt_machine):
        engine = _with_plans(copy_engine(engine_class))
        with pytest.raises(BackendUnavailableError, match="CUDA device"):
            Matcher.from_pretrained(str(engine), device="cpu")  # auto picks TensorRT, which needs CUDA
        matcher = Matcher.from_pretrained(str(engine), engine_runtime="onnxruntime")
        assert matcher.backend.name == "onnxruntime"

    def test_building_needs_tensorrt_and_a_gpu(self, engine_class, copy_engine):
        if _tensorrt_installed() and torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are present")
        with pytest.raises(BackendUnavailableError, match="TensorRT|CUDA GPU"):
            add_tensorrt_plans(copy_engine(engine_class), log=lambda *a: None)


class TestWithoutTensorRT:
    @pytest.mark.skipif(_tensorrt_installed(), reason="TensorRT is installed")
    def test_missing_tensorrt_is_reported(self, tmp_path, export_tiny_sd):
        from sd4match_sdk.export import ExportConfig, export_engine

        with pytest.raises(BackendUnavailableError, match="TensorRT"):
            export_engine(
                ExportConfig(model=str(export_tiny_sd), out=str(tmp_path / "e"), engine="trt"), log=lambda *a: None
            )
        assert not (tmp_path / "e").exists()  # refused before writing anything

    def test_onnx_only_directory_has_no_plans(self, engine_single):
        with pytest.raises(ConfigError, match="no TensorRT plans"):
            Matcher.from_pretrained(str(engine_single), engine_runtime="tensorrt")

    def test_unknown_runtime(self, engine_single):
        with pytest.raises(ConfigError, match="onnxruntime, tensorrt"):
            Matcher.from_pretrained(str(engine_single), engine_runtime="openvino")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(not _tensorrt_installed(), reason="needs TensorRT 10+ (not installable from this CI's registries)")
def test_real_tensorrt_build_matches_torch(engine_class, copy_engine):
    """On a GPU with TensorRT: build real plans for the class engine and compare with ONNX Runtime."""
    from sd4match_sdk.demo import demo_images

    engine = copy_engine(engine_class)
    add_tensorrt_plans(engine, log=lambda *a: None)
    a, _ = demo_images()
    trt_features = Matcher.from_pretrained(str(engine), device="cuda").features(a, category="cat", seed=0).features  # unverified here
    ort_features = (
        Matcher.from_pretrained(str(engine), engine_runtime="onnxruntime").features(a, category="cat", seed=0).features
    )
    torch.testing.assert_close(trt_features.cpu(), ort_features, atol=1e-3, rtol=1e-3)  # TF32 may be on
