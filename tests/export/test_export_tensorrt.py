"""TensorRT: everything around the library is tested here; the build itself needs TensorRT + a GPU.

The TensorRT builder is not installable from the registries this CI reaches (PyPI's ``tensorrt``
is a stub), so :class:`FakeTensorRT` stands in for the documented TensorRT 10 Python API to check
*our* calls (network flags, profile shapes, timing cache, files, manifest). Whether real TensorRT
accepts the graphs is checked only by ``test_real_tensorrt_build_matches_torch``, which skips
without TensorRT and CUDA.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.errors import BackendUnavailableError, ConfigError, EngineError
from sd4match_sdk.export import tensorrt as export_trt
from sd4match_sdk.export.config import onnx_data_file, onnx_file, plan_file
from sd4match_sdk.export.engine import add_tensorrt_plans
from sd4match_sdk.export.manifest import TensorRTInfo, TensorSpec, read_manifest
from sd4match_sdk.export.tensorrt import build_plan, check_plan_compatibility, profile_shapes


def _tensorrt_installed() -> bool:
    try:
        export_trt.import_tensorrt()
    except BackendUnavailableError:
        return False
    return True


class FakeTensorRT:
    """Records the calls :func:`build_plan` makes on the TensorRT 10 Python API."""

    __version__ = "10.99.0"

    def __init__(self, parse_ok: bool = True, build_ok: bool = True) -> None:
        self.calls: list[tuple] = []
        self.parse_ok, self.build_ok = parse_ok, build_ok
        fake = self

        class Logger:
            WARNING = "warning"

            def __init__(self, severity):
                fake.calls.append(("logger", severity))

        class Parser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return fake.parse_ok

            def get_error(self, i):
                return "unsupported operator Foo"

        class TimingCache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"+tuned"

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", pool, size))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_profile",))

            def create_timing_cache(self, data):
                fake.calls.append(("timing_cache_in", bytes(data)))
                self.cache = TimingCache(bytes(data))
                return self.cache

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls.append(("set_timing_cache", ignore_mismatch))

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"PLAN" if fake.build_ok else None

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, Parser, object
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")


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


class TestBuildPlanCalls:
    def test_calls_follow_the_tensorrt_10_api(self, tmp_path):
        trt = FakeTensorRT()
        onnx_path = tmp_path / "unet.onnx"
        onnx_path.write_bytes(b"graph")
        profile = profile_shapes(_unet_inputs(), 4, 2)
        cache = tmp_path / "timing.cache"
        build_plan(onnx_path, tmp_path / "unet.plan", profile, cache, workspace_bytes=1 << 30, trt=trt)
        assert (tmp_path / "unet.plan").read_bytes() == b"PLAN"
        assert cache.read_bytes() == b"+tuned"
        assert ("network_flags", 1 << 1) in trt.calls  # strongly typed
        assert ("parse", "unet.onnx") in trt.calls
        assert ("workspace", "workspace", 1 << 30) in trt.calls
        assert ("set_shape", "latents", (1, 4, 96, 96), (2, 4, 96, 96), (4, 4, 96, 96)) in trt.calls
        assert ("set_timing_cache", False) in trt.calls
        build_plan(onnx_path, tmp_path / "unet.plan", profile, cache, trt=trt)  # the second build reuses the cache
        assert [c for c in trt.calls if c[0] == "timing_cache_in"] == [
            ("timing_cache_in", b""),
            ("timing_cache_in", b"+tuned"),
        ]

    def test_parse_and_build_failures(self, tmp_path):
        with pytest.raises(EngineError, match="could not parse.*unsupported operator Foo"):
            build_plan(tmp_path / "x.onnx", tmp_path / "x.plan", {}, trt=FakeTensorRT(parse_ok=False))
        with pytest.raises(EngineError, match="failed to build"):
            build_plan(tmp_path / "x.onnx", tmp_path / "x.plan", {}, trt=FakeTensorRT(build_ok=False))
        assert not (tmp_path / "x.plan").exists()


@pytest.fixture()
def fake_gpu(monkeypatch):
    """A fake TensorRT 10.99.0 on a fake GPU of compute capability 8.9."""
    trt = FakeTensorRT()
    for module in ("sd4match_sdk.export.tensorrt", "sd4match_sdk.backends.tensorrt"):
        monkeypatch.setattr(f"{module}.import_tensorrt", lambda: trt)
        monkeypatch.setattr(f"{module}.cuda_compute_capability", lambda device=None: ("8.9", "Fake GPU"))
    return trt


class TestPlansInTheEngineDirectory:
    def test_manifest_records_plans_gpu_and_profiles(self, engine_class, copy_engine, fake_gpu):
        engine = copy_engine(engine_class)
        manifest = add_tensorrt_plans(engine, log=lambda *a: None)
        assert manifest == read_manifest(engine)
        assert manifest.engine == "trt" and manifest.libraries["tensorrt"] == "10.99.0"
        info = manifest.tensorrt
        assert (info.version, info.compute_capability, info.device_name, info.strongly_typed) == (
            "10.99.0",
            "8.9",
            "Fake GPU",
            True,
        )
        assert info.profiles["unet"]["class_index"] == {"min": [1], "opt": [2], "max": [3]}  # max_batch 3
        assert info.profiles["vae_encoder"]["pixels"]["max"] == [3, 3, 256, 256]
        for name, graph in manifest.graphs.items():
            assert graph.plan == f"{name}.plan" and (engine / graph.plan).read_bytes() == b"PLAN"
            assert graph.plan in manifest.files
        assert "timing.cache" in manifest.files and graph.onnx in manifest.files  # ONNX graphs stay

    def test_plans_for_another_gpu_are_refused(self, engine_class, copy_engine, fake_gpu, monkeypatch):
        engine = copy_engine(engine_class)
        add_tensorrt_plans(engine, log=lambda *a: None)
        monkeypatch.setattr(
            "sd4match_sdk.backends.tensorrt.cuda_compute_capability", lambda device=None: ("9.0", "Other GPU")
        )
        with pytest.raises(EngineError, match=r"compute capability 8\.9.*this GPU has compute capability 9\.0"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_plans_for_another_tensorrt_are_refused(self, engine_class, copy_engine, fake_gpu):
        engine = copy_engine(engine_class)
        add_tensorrt_plans(engine, log=lambda *a: None)
        data = json.loads((engine / "manifest.json").read_text())
        data["tensorrt"]["version"] = "10.1.0"
        (engine / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(EngineError, match=r"TensorRT 10\.1\.0.*this machine has TensorRT 10\.99\.0"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_modified_plan_is_refused(self, engine_class, copy_engine, fake_gpu):
        engine = copy_engine(engine_class)
        add_tensorrt_plans(engine, log=lambda *a: None)
        (engine / "unet.plan").write_bytes(b"PLAM")
        with pytest.raises(EngineError, match=r"unet\.plan.*differs from its manifest"):
            Matcher.from_pretrained(str(engine), device="cuda")

    def test_trt_directory_still_runs_with_onnxruntime(self, engine_class, copy_engine, fake_gpu):
        engine = copy_engine(engine_class)
        add_tensorrt_plans(engine, log=lambda *a: None)
        matcher = Matcher.from_pretrained(str(engine), engine_runtime="onnxruntime")
        assert matcher.backend.name == "onnxruntime"
        with pytest.raises(BackendUnavailableError, match="CUDA device"):
            Matcher.from_pretrained(str(engine), device="cpu")  # auto picks TensorRT, which needs CUDA


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
    trt_features = Matcher.from_pretrained(str(engine), device="cuda").features(a, category="cat", seed=0).features
    ort_features = (
        Matcher.from_pretrained(str(engine), engine_runtime="onnxruntime").features(a, category="cat", seed=0).features
    )
    torch.testing.assert_close(trt_features.cpu(), ort_features, atol=1e-3, rtol=1e-3)  # TF32 may be on
