"""The UNet truncated after up_blocks[1] equals the full UNet's block output and runs nothing after it (docs/design.md §13.4)."""

from __future__ import annotations

import pytest
import torch

from sd4match_sdk.models.unet import TruncatedUNet


@pytest.mark.parametrize("latent", [96, 40])  # 96: 768 px; 40: not divisible by 8 -> explicit upsample sizes
def test_truncated_unet_equals_full_unet_block_output(sd_components, latent: int) -> None:
    unet = sd_components.unet
    torch.manual_seed(0)
    sample = torch.randn(2, 4, latent, latent)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    t = torch.tensor(50)
    captured = {}
    hook = unet.up_blocks[1].register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    try:
        with torch.no_grad():
            unet(sample, t, encoder_hidden_states=context)
    finally:
        hook.remove()
    with torch.no_grad():
        truncated = TruncatedUNet(unet)(sample, t, context)
    assert truncated.shape == captured["out"].shape == (2, 64, latent // 2, latent // 2)
    torch.testing.assert_close(truncated, captured["out"], atol=1e-5, rtol=0)


def test_truncated_unet_does_not_run_later_blocks(sd_components) -> None:
    unet = sd_components.unet
    ran = []
    hooks = [unet.up_blocks[i].register_forward_hook(lambda *a, i=i: ran.append(i)) for i in range(4)]
    hooks.append(unet.conv_out.register_forward_hook(lambda *a: ran.append("conv_out")))
    try:
        with torch.no_grad():
            TruncatedUNet(unet)(torch.randn(1, 4, 32, 32), torch.tensor(50), torch.randn(1, 77, 32))
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0, 1]
