"""Winograd 3x3 convolutions equal the direct ones (docs/design.md §13.24), without compiling."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sd4match_sdk.errors import ConfigError
from sd4match_sdk.models.attention import use_fast_attention
from sd4match_sdk.models.unet import TruncatedUNet
from sd4match_sdk.models.winograd import WinogradConv2d, tile_transforms, use_winograd, winograd_matrices


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("side", [(12, 12), (6, 6), (7, 10), (1, 1)])  # whole tiles, padded tiles, one pixel
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_convolution_equals_the_direct_one(tile: int, side: tuple[int, int], bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 40, 3, padding=1, bias=bias)
    x = torch.randn(2, 48, *side)
    exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(), padding=1)
    winograd = WinogradConv2d(conv, tile)
    with torch.no_grad():
        got = winograd(x)
        got_channels_last = winograd(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == exact.shape and got.dtype == torch.float32
    # F(4x4) rounds about 10x more than the direct convolution (transform coefficients up to 8)
    torch.testing.assert_close(got.double(), exact, atol=2e-5 * exact.abs().max().item(), rtol=0)
    torch.testing.assert_close(got_channels_last, got, atol=1e-6, rtol=0)


def test_the_transforms_are_a_minimal_filtering_algorithm() -> None:
    """1-D check of the matrices, A^T [(G g) * (B^T d)] is the correlation of d with g, and of the
    Kronecker form of the 2-D tile transforms."""
    for m in (2, 4):
        bt, g, at = winograd_matrices(m)
        d, taps = torch.randn(m + 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        expected = torch.stack([d[i : i + 3] @ taps for i in range(m)])
        torch.testing.assert_close(at @ ((g @ taps) * (bt @ d)), expected)
        tile = torch.randn(m + 2, m + 2, dtype=torch.float64)
        input_transform, output_transform = tile_transforms(m, torch.float64)
        torch.testing.assert_close(input_transform @ tile.flatten(), (bt @ tile @ bt.T).flatten())
        torch.testing.assert_close(output_transform @ tile.flatten(), (at @ tile @ at.T).flatten())
    with pytest.raises(ConfigError, match="tile side 3"):
        winograd_matrices(3)


def test_use_winograd_replaces_only_what_it_can() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1),  # replaced
        nn.Conv2d(32, 32, 3, stride=2, padding=1),  # strided: kept
        nn.Conv2d(32, 32, 1),  # 1x1: kept
        nn.Sequential(nn.Conv2d(32, 8, 3, padding=1)),  # nested: replaced
        nn.Conv2d(8, 8, 3, padding=1),  # fewer channels than asked: kept
    )
    reference = copy.deepcopy(model)
    assert use_winograd(model, min_channels=32) == 2
    kinds = [type(m) for m in (model[0], model[1], model[2], model[3][0], model[4])]
    assert kinds == [WinogradConv2d, nn.Conv2d, nn.Conv2d, WinogradConv2d, nn.Conv2d]
    assert "weight" not in dict(model[0].named_parameters()) and model[0].filters.shape == (36, 32, 32)
    x = torch.randn(1, 32, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="Winograd does not apply"):
        WinogradConv2d(nn.Conv2d(8, 8, 3, padding=1).to(torch.bfloat16))
    assert use_winograd(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))) == 0


def test_winograd_unet_equals_the_direct_one(sd_components) -> None:
    """The tiny truncated UNet with every 3x3 convolution replaced, against the original."""
    reference = TruncatedUNet(sd_components.unet)
    winograd = copy.deepcopy(reference)
    use_fast_attention(winograd)
    replaced = use_winograd(winograd, min_channels=0)
    assert replaced == sum(isinstance(m, WinogradConv2d) for m in winograd.modules()) > 10
    torch.manual_seed(0)
    sample, context = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = reference(sample, torch.tensor(50), context)
        got = winograd(sample, torch.tensor(50), context)
    torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_compiled_winograd_convolution_equals_the_direct_one() -> None:
    """Inductor fuses the transforms (the form the CPU's compiled path runs); the result is unchanged."""
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 40, 3, padding=1)
    winograd = WinogradConv2d(conv)
    compiled = torch.compile(winograd, dynamic=False)
    for side in ((12, 12), (7, 10)):
        x = torch.randn(2, 48, *side).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected, got = conv(x), compiled(x)
        torch.testing.assert_close(got, expected, atol=2e-5 * expected.abs().max().item(), rtol=0)
