"""Feature extraction: VAE posterior sample, add_noise coefficients, ensemble mean (docs/design.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sd4match_sdk.models.features import SDFeatureExtractor


@pytest.mark.parametrize("t, coeffs", [(261, (0.80973, 0.58680)), (50, (0.97549, 0.22005)), (100, (0.94563, 0.32523))])
def test_add_noise_coefficients(sd_components, t: int, coeffs: tuple[float, float]) -> None:
    """docs/design.md §3.3: sqrt(abar_t) and sqrt(1 - abar_t) of SD's scaled-linear schedule."""
    z, eps = torch.ones(1, 1), torch.zeros(1, 1)
    a = sd_components.scheduler.add_noise(z, eps, torch.tensor([t])).item()
    b = sd_components.scheduler.add_noise(eps, z, torch.tensor([t])).item()
    assert a == pytest.approx(coeffs[0], abs=2e-5) and b == pytest.approx(coeffs[1], abs=2e-5)


def test_vae_posterior_sample_times_scaling_factor(sd_components) -> None:
    ext = SDFeatureExtractor(sd_components.vae, sd_components.unet, sd_components.scheduler, 50)
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 256, 256) * 2 - 1
    eps = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        dist = sd_components.vae.encode(pixels).latent_dist
        expected = (dist.mean + dist.std * eps) * 0.18215
        got = ext.encode_latents(pixels, eps)
    torch.testing.assert_close(got, expected)
    assert ext.latent_shape(768) == (4, 96, 96)


def test_ensemble_is_mean_of_individual_runs(sd_components) -> None:
    ext = SDFeatureExtractor(sd_components.vae, sd_components.unet, sd_components.scheduler, 50)
    torch.manual_seed(1)
    latents = torch.randn(2, 4, 32, 32)
    noise = torch.randn(2, 3, 4, 32, 32)
    context = torch.randn(2, 77, 32)
    with torch.no_grad():
        batched = ext.unet_features(latents, noise, context)
        t = torch.tensor(50)
        singles = torch.stack([
            torch.stack([
                ext.unet(sd_components.scheduler.add_noise(latents[b : b + 1], noise[b, e : e + 1], torch.tensor([50])), t, context[b : b + 1])[0]
                for e in range(3)
            ]).mean(0)
            for b in range(2)
        ])
    assert batched.shape == (2, 64, 16, 16)
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------ the forward process, whatever the scheduler (docs/design.md §3.7)


def _with_scheduler(tiny_sd, tmp_path, name: str, **config):
    """A copy of the tiny SD 2.1 whose scheduler/ names another diffusers class (same schedule)."""
    import shutil

    import diffusers

    model = tmp_path / f"sd-{name}"
    shutil.copytree(tiny_sd, model)
    base = diffusers.DDIMScheduler.load_config(str(tiny_sd), subfolder="scheduler")
    getattr(diffusers, name).from_config({**base, **config}).save_pretrained(model / "scheduler")
    return model


@pytest.mark.parametrize("t", [0, 50, 261, 999])
def test_forward_diffuse_is_bitwise_ddim_and_ddpm_add_noise(sd_components, t: int) -> None:
    import diffusers

    from sd4match_sdk.models.features import forward_diffuse

    g = torch.Generator().manual_seed(t)
    z, eps = torch.randn((3, 4, 8, 8), generator=g), torch.randn((3, 4, 8, 8), generator=g)
    steps = torch.full((3,), t, dtype=torch.long)
    ddim = sd_components.scheduler
    ddpm = diffusers.DDPMScheduler.from_config(ddim.config)
    got = forward_diffuse(z, eps, ddim.alphas_cumprod, steps)
    assert torch.equal(got, ddim.add_noise(z, eps, steps)) and torch.equal(got, ddpm.add_noise(z, eps, steps))


def test_an_euler_scheduler_directory_gives_the_ddim_features(tiny_sd, tmp_path, demo_pair) -> None:
    import diffusers

    from sd4match_sdk import Matcher

    euler_dir = _with_scheduler(tiny_sd, tmp_path, "EulerDiscreteScheduler")
    euler = Matcher.from_pretrained(str(euler_dir), image_size=128, ensemble=2)
    assert isinstance(euler.backend.components.scheduler, diffusers.EulerDiscreteScheduler)
    ddim = Matcher.from_pretrained(str(tiny_sd), image_size=128, ensemble=2)
    a, b = demo_pair
    assert torch.equal(euler.features(a, seed=0).features, ddim.features(a, seed=0).features)
    np.testing.assert_array_equal(euler.match(a, b, [[100.0, 200.0]], seed=0).points, ddim.match(a, b, [[100.0, 200.0]], seed=0).points)
    # The test can fail: Euler's own add_noise is z + sigma_t * eps, not the forward process.
    scheduler = euler.backend.components.scheduler
    z, eps, t = torch.ones(1, 1), torch.ones(1, 1), torch.tensor([50])
    assert not torch.allclose(scheduler.add_noise(z, eps, t.float()), ddim.backend.components.scheduler.add_noise(z, eps, t))


def test_a_scheduler_without_a_ddpm_schedule_is_refused(tiny_sd, tmp_path) -> None:
    from sd4match_sdk import WeightsError
    from sd4match_sdk.models.loading import load_sd_components

    model = _with_scheduler(tiny_sd, tmp_path, "FlowMatchEulerDiscreteScheduler")
    with pytest.raises(WeightsError, match=r"FlowMatchEulerDiscreteScheduler\) has no alphas_cumprod.*use an SD 2\.1 directory"):
        load_sd_components(str(model))


def test_a_timestep_beyond_the_schedule_is_refused(tiny_sd, tmp_path) -> None:
    from sd4match_sdk import ConfigError, Matcher

    model = _with_scheduler(tiny_sd, tmp_path, "DDIMScheduler", num_train_timesteps=100)
    with pytest.raises(ConfigError, match=r"timestep 261 is outside the scheduler's 100 steps; pass a timestep below it"):
        Matcher.from_pretrained(str(model), timestep=261, image_size=256)
