"""Settings are checked by type and range (docs/design.md §13.16): each bad value is a ConfigError
that names the setting, the value and what to pass instead, before any model loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sd4match_sdk import ConfigError, FeatureConfig, MatchConfig, Matcher
from sd4match_sdk.checks import check_fraction, check_int, check_positive_float, check_seed, resolve_device
from sd4match_sdk.noise import derive_seed, make_generator
from sd4match_sdk.ops.pck import PCKAccumulator


class TestIntegers:
    @pytest.mark.parametrize(
        "field, value, message",
        [
            ("ensemble", 2.5, r"ensemble must be an integer \(got 2\.5 of type float\)"),
            ("image_size", 128.0, r"image_size must be an integer \(got 128\.0 of type float\); pass 128"),
            ("timestep", 50.5, r"timestep must be an integer \(got 50\.5"),
            ("ensemble", True, r"ensemble must be an integer \(got True of type bool\)"),
            ("timestep", "50", r"timestep must be an integer \(got '50' of type str\)"),
            ("image_size", 100, r"positive multiple of 64 \(got 100\).*e\.g\. 768"),
            ("timestep", 1000, r"timestep must lie in \[0, 1000\) \(got 1000\); 50 is the released"),
            ("ensemble", 0, r"ensemble must be >= 1 \(got 0\); 8 is the released"),
        ],
    )
    def test_feature_config(self, field, value, message):
        with pytest.raises(ConfigError, match=message):
            FeatureConfig(**{field: value})

    def test_numpy_integers_are_integers(self):
        config = FeatureConfig(image_size=np.int64(256), timestep=np.int32(50), ensemble=np.int64(2))
        assert (config.image_size, config.timestep, config.ensemble) == (256, 50, 2)
        assert type(config.image_size) is int and config.grid_size == 16

    def test_range_message(self):
        with pytest.raises(ConfigError, match=r"max_batch must lie in \[1, 8\] \(got 9\)"):
            check_int("max_batch", 9, 1, 8)

    def test_through_from_pretrained_before_loading(self, tmp_path):
        missing = str(tmp_path / "no-model")  # nothing is loaded: the settings fail first
        with pytest.raises(ConfigError, match=r"ensemble must be an integer \(got 2\.5"):
            Matcher.from_pretrained(missing, ensemble=2.5)
        with pytest.raises(ConfigError, match=r"image_size must be an integer \(got 128\.0.*pass 128"):
            Matcher.from_pretrained(missing, image_size=128.0)


class TestFloats:
    @pytest.mark.parametrize(
        "field, value",
        [("sigma", math.nan), ("beta", math.nan), ("sigma", math.inf), ("beta", -0.04), ("sigma", 0.0), ("beta", "0.04"),
         ("sigma", True)],
    )  # fmt: skip
    def test_match_config(self, field, value):
        with pytest.raises(ConfigError, match=f"{field} must be a (finite number > 0|positive number)"):
            MatchConfig(**{field: value})

    def test_nan_sigma_through_from_pretrained(self, tmp_path):
        with pytest.raises(ConfigError, match=r"sigma must be a finite number > 0 \(got nan\); e\.g\. the default"):
            Matcher.from_pretrained(str(tmp_path / "no-model"), sigma=float("nan"))

    def test_valid_values_are_floats(self):
        assert check_positive_float("beta", 1) == 1.0 and isinstance(MatchConfig(sigma=7).sigma, float)


class TestSeeds:
    @pytest.mark.parametrize(
        "seed, message",
        [
            (2.5, r"seed must be an integer \(got 2\.5 of type float\); e\.g\. seed=0"),
            ("0", r"seed must be an integer \(got '0' of type str\)"),
            (2**64, r"seed 18446744073709551616 is outside the generator's range.*pass a smaller seed"),
            (-(2**63) - 1, r"outside the generator's range"),
        ],
    )
    def test_bad_seeds(self, seed, message):
        with pytest.raises(ConfigError, match=message):
            make_generator(seed)
        with pytest.raises(ConfigError, match=message.split(r"\(")[0]):
            derive_seed(seed, "image")

    def test_match_refuses_a_bad_seed(self, matcher256, demo_pair):
        with pytest.raises(ConfigError, match=r"seed must be an integer \(got 1\.5"):
            matcher256.match(demo_pair[0], demo_pair[1], [[10.0, 10.0]], seed=1.5)

    def test_generator_range_ends_are_accepted(self):
        assert check_seed(2**64 - 1) == 2**64 - 1 and check_seed(np.int64(-5)) == -5
        make_generator(2**64 - 1)

    def test_generator_must_be_a_generator(self):
        with pytest.raises(ConfigError, match="generator must be a CPU torch.Generator.*or pass seed"):
            make_generator(generator=42)


class TestAlphas:
    @pytest.mark.parametrize("alphas", [(0.1, 1.5), (0.0,), (-0.1,), (math.nan,), ("0.1",), (), 0.1])
    def test_bad_alphas(self, alphas):
        with pytest.raises(ConfigError, match=r"(must lie in \(0, 1\]|fractions in \(0, 1\]|positive number|finite number)"):
            PCKAccumulator(alphas)

    def test_good_alphas(self):
        assert PCKAccumulator(np.array([0.05, 0.1, 1.0])).alphas == (0.05, 0.1, 1.0)
        assert check_fraction("alpha", 1) == 1.0


class TestDevices:
    @pytest.mark.parametrize(
        "device, message",
        [
            ("gpu", r"invalid device 'gpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'"),
            ("cuda:x", r"invalid device 'cuda:x'"),
            (3, r"device must be a string or torch.device \(got int\); e\.g\. 'cpu' or 'cuda'"),
            ("meta", r"device type 'meta' is not supported; use 'cpu' or 'cuda'"),
        ],
    )
    def test_invalid_devices(self, device, message):
        with pytest.raises(ConfigError, match=message):
            resolve_device(device)

    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    @pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
    def test_cuda_without_cuda(self, device, tmp_path):
        message = r"asked for, but torch sees no CUDA device .*use device='cpu'"
        with pytest.raises(ConfigError, match=message):
            resolve_device(device)
        with pytest.raises(ConfigError, match=message):
            Matcher.from_pretrained(str(tmp_path / "no-model"), device=device)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_a_cuda_index_this_machine_lacks(self):
        count = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {count} CUDA device"):
            resolve_device(f"cuda:{count}")

    def test_auto_and_cpu(self):
        assert resolve_device("cpu") == torch.device("cpu")
        assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


class TestArgumentTypes:
    """Arguments of the wrong kind are ConfigErrors, not TypeErrors from deep inside."""

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"model": 123}, r"model must be a directory or hub id string \(got 123\)"),
            ({"dtype": "float16"}, r"dtype must be None or a floating torch.dtype \(got 'float16'\); e\.g\. dtype=torch\.float16"),
            ({"dtype": torch.int8}, r"dtype must be None or a floating torch.dtype"),
        ],
    )
    def test_from_pretrained(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            Matcher.from_pretrained(**kwargs)

    def test_engine_runtime_is_for_engines(self, tiny_sd):
        with pytest.raises(ConfigError, match=r"engine_runtime applies to engine directories; .* is a diffusers model: leave it 'auto'"):
            Matcher.from_pretrained(str(tiny_sd), engine_runtime="tensorrt")

    @pytest.mark.parametrize(
        "call, message",
        [
            (lambda m, a: m.match_batch(None), r"pairs must be a list \(got NoneType\)"),
            (lambda m, a: m.match_batch(7), r"pairs must be a list \(got int\)"),
            (lambda m, a: m.match_batch([5]), r"pair 0 must be a tuple \(source, target, points\[, category\]\); got int 5"),
            (lambda m, a: m.match_batch([(a, a)]), r"pair 0 must be a tuple .*got tuple"),
            (lambda m, a: m.features_batch([a], categories=3), r"categories must be a list \(got int\)"),
            (lambda m, a: m.features_batch(None), r"images must be a list \(got NoneType\)"),
            (lambda m, a: m.match_features("x", "y", [[1, 2]]), r"match_features takes the ImageFeatures of m\.features\(image\)"),
        ],
        ids=["pairs-none", "pairs-int", "pair-int", "pair-of-two", "categories-int", "images-none", "features-not-features"],
    )
    def test_matcher_methods(self, call, message, matcher256, demo_pair):
        with pytest.raises(ConfigError, match=message):
            call(matcher256, demo_pair[0])

    def test_a_noise_file_that_is_not_npy(self, tmp_path):
        from sd4match_sdk.noise import NOISE_FILES, load_pair_noise

        for name in NOISE_FILES:
            (tmp_path / name).write_bytes(b"junk")
        with pytest.raises(ConfigError, match=r"eps_vae_source\.npy' is not a \.npy array .*write the directory with save_pair_noise"):
            load_pair_noise(tmp_path)
