"""Feature extraction: VAE posterior sample, add_noise coefficients, ensemble mean (docs/design.md §3)."""

from __future__ import annotations

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
