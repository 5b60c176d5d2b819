"""Engine backend plumbing: provider choice, chunking, and the full SD 2.1 architecture (slow)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.engine.onnxrt import select_providers


class TestProviders:
    def test_cpu(self):
        assert select_providers(torch.device("cpu"), ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
            "CPUExecutionProvider"
        ]

    def test_cuda_provider_first_with_cpu_fallback(self):
        providers = select_providers(torch.device("cuda:1"), ["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert providers == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]

    def test_cuda_without_the_provider_warns_and_uses_the_cpu(self):
        with pytest.warns(UserWarning, match="onnxruntime-gpu"):
            assert select_providers(torch.device("cuda"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_an_engine_that_falls_back_to_the_cpu_prepares_its_batches_for_the_cpu(engine_single, demo_pair):
    """device='cuda' with a CPU-only onnxruntime: the graphs run on the CPU, so the batches must be
    prepared there (no pinned copies to a GPU, a budget of host memory); this runs on a CPU-only torch."""
    from sd4match_sdk.engine.runtime import open_engine
    from sd4match_sdk.images import load_image
    from sd4match_sdk.noise import draw_pair_noise

    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: no fallback")
    with pytest.warns(UserWarning, match="no CUDAExecutionProvider"):
        backend = open_engine(engine_single, torch.device("cuda"))
    assert backend.device.type == "cpu"
    src, trg = (load_image(p) for p in demo_pair)
    assert backend.max_batch_images() >= 1
    noises = [draw_pair_noise(torch.Generator().manual_seed(0), backend.feature_config.ensemble, backend.latent_shape)]
    features = backend.extract_pairs([src], [trg], [None], noises)
    assert features.device.type == "cpu" and torch.isfinite(features).all()


def test_requests_are_chunked_by_max_batch(engine_class):
    """max_batch 3: a 2-pair request (4 images) runs the UNet graph twice (3 + 1 images)."""
    from sd4match_sdk.demo import demo_images

    matcher = Matcher.from_pretrained(str(engine_class))
    runner = matcher.backend.runners["unet"]
    batches = []
    original = runner.run
    runner.run = lambda feeds: batches.append(feeds["latents"].shape[0]) or original(feeds)
    a, b = demo_images()
    matcher.match_batch([(a, b, [[10.0, 10.0]], "cat"), (b, a, [[10.0, 10.0]], "dog")], seed=0)
    assert batches == [3, 1]


@pytest.mark.slow
def test_full_sd21_exports_with_external_data_and_runs_in_onnxruntime(tmp_path):
    """SD 2.1 architecture (random weights), 768 px, E=1: ~3 GB of UNet weights in unet.onnx.data.

    Several minutes and ~15 GB of RAM on a 2-core CPU: run with --runslow.
    """
    from sd4match_sdk.features import TorchFeatureBackend
    from sd4match_sdk.config import FeatureConfig
    from sd4match_sdk.demo import demo_images
    from sd4match_sdk.export import ExportConfig, export_engine, read_manifest
    from sd4match_sdk.prompts import PromptWeights
    from sd4match_sdk.testing import build_sd21_random

    components = build_sd21_random()
    feature = FeatureConfig(image_size=768, timestep=50, ensemble=1)
    out = tmp_path / "sd21"
    export_engine(
        ExportConfig(model="random-sd21", out=str(out), feature=feature, max_batch=2),
        log=lambda *a: None,
        components=components,
    )
    manifest = read_manifest(out)
    assert manifest.graphs["unet"].onnx_data == "unet.onnx.data"
    assert manifest.files["unet.onnx.data"].bytes > 2**31
    assert manifest.feature_shape == (1280, 48, 48) and manifest.latent_shape == (4, 96, 96)
    a, _ = demo_images()
    expected = (
        Matcher(TorchFeatureBackend(components, PromptWeights.from_text(""), feature, torch.device("cpu")))
        .features(a, seed=0)
        .features
    )
    del components
    got = Matcher.from_pretrained(str(out)).features(a, seed=0).features
    assert (got - expected).abs().max() / expected.abs().max() < 1e-3


def test_io_binding_equals_the_numpy_path(engine_cpm):
    """The CUDA provider's path (torch tensors bound by address, outputs shaped from the manifest),
    run on the CPU provider: same outputs as the host-copy path, for every graph."""
    from sd4match_sdk.engine import read_manifest
    from sd4match_sdk.engine.onnxrt import OnnxRuntimeRunner

    manifest = read_manifest(engine_cpm)
    torch.manual_seed(0)
    for name, graph in manifest.graphs.items():
        sizes = {"batch": 3, "pairs": 2}
        feeds = {s.name: torch.randn(s.concrete(sizes)) for s in graph.inputs}
        path = engine_cpm / graph.onnx
        plain = OnnxRuntimeRunner(path, ["CPUExecutionProvider"], graph=graph)
        bound = OnnxRuntimeRunner(path, ["CPUExecutionProvider"], graph=graph, io_binding=True)
        assert not plain.io_binding and bound.io_binding  # the CPU provider binds only when asked
        expected, got = plain.run(feeds), bound.run(feeds)
        assert set(got) == set(expected) == {s.name for s in graph.outputs}, name
        for key in expected:
            assert got[key].shape == expected[key].shape and got[key].dtype == expected[key].dtype
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


class TestExplicitSettings:
    """An engine's settings are baked in: a different explicit value is refused, not dropped."""

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"ensemble": 8}, r"exported with ensemble=2; ensemble=8 cannot be honoured by it: pass ensemble=None .*--ensemble 8"),
            ({"timestep": 261}, r"exported with timestep=50; timestep=261 cannot be honoured.*--timestep 261"),
            ({"image_size": 768}, r"exported with image_size=256; image_size=768 cannot be honoured.*--image-size 768"),
            ({"dtype": torch.float16}, r"UNet is fp32 \(baked at export\); dtype=torch\.float16 cannot be honoured by it: pass dtype=None.*--dtype"),
            ({"dino": "facebook/dinov2-base"}, r"dino= applies to the PyTorch path.*pass dino=None"),
            ({"ensemble": 2.5}, r"ensemble must be an integer \(got 2\.5"),
            ({"vae_dtype": torch.float16}, r"vae_dtype= applies to the PyTorch path.*pass vae_dtype=None"),
            ({"compile": True}, r"compile= applies to the PyTorch path.*pass compile=False"),
        ],
    )
    def test_refused(self, engine_single, kwargs, message):
        from sd4match_sdk import ConfigError

        with pytest.raises(ConfigError, match=message):
            Matcher.from_pretrained(str(engine_single), **kwargs)

    def test_the_engines_own_values_are_accepted(self, engine_single, engine_fp16):
        matcher = Matcher.from_pretrained(str(engine_single), ensemble=2, timestep=50, image_size=256, dtype=torch.float32)
        assert (matcher.feature_config.ensemble, matcher.feature_config.image_size) == (2, 256)
        assert Matcher.from_pretrained(str(engine_fp16), dtype=torch.float16).backend.manifest.precision == "fp16"

    def test_a_memory_budget_applies_to_engines_too(self, engine_single):
        from sd4match_sdk import ConfigError

        assert Matcher.from_pretrained(str(engine_single), memory_budget=1).backend.max_batch_images() == 1
        with pytest.raises(ConfigError, match=r"memory_budget must lie in \[1, inf\] \(got 0\)"):
            Matcher.from_pretrained(str(engine_single), memory_budget=0)

    def test_the_cli_refuses_them_too(self, engine_single, capsys):
        from sd4match_sdk.cli import main
        from sd4match_sdk.demo import demo_images

        a, b = demo_images()
        assert main(["match", str(a), str(b), "--points", "10,10", "--model", str(engine_single), "--ensemble", "8"]) == 2
        err = capsys.readouterr().err
        assert "ensemble=8 cannot be honoured" in err and "Traceback" not in err
        assert main(["match", str(a), str(b), "--points", "10,10", "--model", str(engine_single), "--seed", "0"]) == 0
