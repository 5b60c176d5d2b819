"""Winograd 3x3 convolutions for the compiled CPU path: the same convolution with fewer multiplies.

On the CPU the float32 UNet and VAE run at the matrix-product rate already, so only less
arithmetic makes them faster (docs/design.md §13.24). Winograd's minimal filtering F(m x m, 3 x 3)
(Lavin & Gray, 2016) computes each m x m output tile of a 3x3 convolution from an a x a input
tile, a = m + 2, with a^2 multiplies per channel pair instead of 9 m^2: 4x fewer for m = 4:

    Y = A^T [ (G w G^T) . (B^T d B) ] A,   summed over the input channels.

Here that is three matrix products: the input tiles' transform (``B^T d B`` for every tile and
channel at once, as one ``(a^2, a^2)`` Kronecker matrix), the a^2 products over the channels with
the filters transformed once (``bmm``), and the output tiles' transform. Each is a library
matrix product, so the path is fast eagerly and compiles in seconds. The filters are kept
transformed, a^2 / 9 times the weights' memory (4x for m = 4), and the original weights are dropped.

Install it with :func:`use_winograd` (``CompiledStages`` does, on the CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "WinogradConv2d",
    "is_winograd_convertible",
    "tile_transforms",
    "transform_filters",
    "use_winograd",
    "winograd_conv3x3",
    "winograd_matrices",
]

#: Output tile side used by :func:`use_winograd` (F(4x4, 3x3)).
DEFAULT_TILE = 4
#: Convolutions with fewer input channels stay direct: their tile transforms, which scale with the
#: activations rather than the weights, cost more than the saved multiplies (docs/design.md §13.24).
DEFAULT_MIN_CHANNELS = 320


#: ``(B^T, G, A^T)`` of F(m x m, 3 x 3) per output tile side m: ``(a, a)``, ``(a, 3)``, ``(m, a)``,
#: a = m + 2; interpolation points 0, 1, -1 (m = 2) and 0, 1, -1, 2, -2 (m = 4), and infinity.
_MATRICES = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}  # fmt: skip


def winograd_matrices(m: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(B^T, G, A^T)`` of F(m x m, 3 x 3) as float64 tensors: ``(a, a)``, ``(a, 3)``, ``(m, a)``, a = m + 2.

    Raises:
        ConfigError: ``m`` other than 2 or 4.
    """
    if m not in _MATRICES:
        raise ConfigError(f"Winograd tile side {m} is not supported; use 2 or 4")
    return tuple(torch.tensor(t, dtype=torch.float64) for t in _MATRICES[m])  # type: ignore[return-value]


def transform_filters(weight: Tensor, m: int) -> Tensor:
    """``(C_out, C_in, 3, 3)`` filters -> ``(a*a, C_in, C_out)`` transformed filters ``G w G^T``.

    Computed in float64 and returned in ``weight``'s dtype.
    """
    _, g, _ = winograd_matrices(m)
    a, (c_out, c_in) = m + 2, weight.shape[:2]
    u = torch.einsum("ij,ocjk,lk->ilco", g.to(weight.device), weight.double(), g.to(weight.device))
    return u.reshape(a * a, c_in, c_out).to(weight.dtype).contiguous()


def tile_transforms(m: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The tile transforms as matrices on flattened tiles: ``B^T (x) B^T``, ``(a*a, a*a)``, and
    ``A^T (x) A^T``, ``(m*m, a*a)`` (Kronecker products: ``B^T d B`` of an ``a x a`` tile ``d`` is
    ``(B^T (x) B^T) vec(d)`` for the row-major ``vec``)."""
    bt, _, at = winograd_matrices(m)
    return torch.kron(bt, bt).to(dtype), torch.kron(at, at).to(dtype)


def winograd_conv3x3(x: Tensor, filters: Tensor, input_transform: Tensor, output_transform: Tensor) -> Tensor:
    """3x3 convolution, stride 1, zero padding 1, no bias, by F(m x m, 3 x 3), channels last.

    Three matrix products: the input tiles' transform (one ``(a*a, a*a)`` matrix for all tiles and
    channels), the ``a*a`` products over the channels (``bmm``), the output tiles' transform.
    Maps that are not whole tiles are padded with zeros at the bottom and right and cropped after:
    the outputs inside the map only ever read those rows and columns as the padding zeros.

    Args:
        x: ``(B, H, W, C_in)``.
        filters: ``(a*a, C_in, C_out)`` from :func:`transform_filters`, a = m + 2.
        input_transform, output_transform: ``(a*a, a*a)`` and ``(m*m, a*a)`` from :func:`tile_transforms`.

    Returns:
        ``(B, H, W, C_out)``: the direct convolution up to rounding.
    """
    a, m = math.isqrt(input_transform.shape[0]), math.isqrt(output_transform.shape[0])
    batch, height, width, channels = x.shape
    rows, cols = -(-height // m), -(-width // m)
    padded = F.pad(x, (0, 0, 1, 1 + cols * m - width, 1, 1 + rows * m - height))  # (C, W, H) pads
    # 1. overlapping a x a input tiles, every m pixels, flattened: (a*a, B*rows*cols*C_in); transformed
    tiles = padded.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3).reshape(a * a, -1)
    v = (input_transform @ tiles).view(a * a, batch * rows * cols, channels)
    # 2. the a*a matrix products over the channels
    products = torch.bmm(v, filters)
    # 3. the m x m output tiles, placed back in the map
    out = (output_transform @ products.view(a * a, -1)).view(m, m, batch, rows, cols, -1)
    out = out.permute(2, 3, 0, 4, 1, 5).reshape(batch, rows * m, cols * m, -1)
    return out[:, :height, :width]


def is_winograd_convertible(conv: nn.Module) -> bool:
    """A float32 ``Conv2d`` with a 3x3 kernel, stride 1, zero padding 1, no dilation and no groups."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.weight.dtype == torch.float32
    )


class WinogradConv2d(nn.Module):
    """A 3x3 ``Conv2d`` (stride 1, padding 1) run by F(m x m, 3 x 3), its filters transformed once.

    Takes and returns ``(B, C, H, W)`` like the convolution it replaces (channels-last strides
    make the layout changes free).

    Args:
        conv: the convolution (:func:`is_winograd_convertible`); its weight is not kept.
        tile: the output tile side m, 2 or 4.
    """

    def __init__(self, conv: nn.Conv2d, tile: int = DEFAULT_TILE) -> None:
        super().__init__()
        if not is_winograd_convertible(conv):
            raise ConfigError(f"{conv} is not a float32 3x3 stride-1 padding-1 convolution; Winograd does not apply")
        self.tile = tile
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        weight = conv.weight.detach()
        self.register_buffer("filters", transform_filters(weight, tile))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        input_transform, output_transform = tile_transforms(tile)
        self.register_buffer("input_transform", input_transform.to(weight.device))
        self.register_buffer("output_transform", output_transform.to(weight.device))

    def forward(self, x: Tensor) -> Tensor:
        out = winograd_conv3x3(x.permute(0, 2, 3, 1), self.filters, self.input_transform, self.output_transform)
        if self.bias is not None:
            out = out + self.bias
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), F({self.tile}x{self.tile}, 3x3)"


def use_winograd(module: nn.Module, min_channels: int = DEFAULT_MIN_CHANNELS, tile: int = DEFAULT_TILE) -> int:
    """Replace, in place, every convertible ``Conv2d`` of ``module`` with ``min_channels`` or more
    input channels by a :class:`WinogradConv2d`.

    Returns:
        How many convolutions were replaced.
    """
    targets = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if is_winograd_convertible(child) and child.in_channels >= min_channels
    ]
    for parent, name, conv in targets:
        setattr(parent, name, WinogradConv2d(conv, tile))
    return len(targets)
