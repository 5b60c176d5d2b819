"""The Conditional Prompting Module, ``Pair-DINO-Feat-G25-C50`` (docs/design.md §4.4).

From DINOv2 patch tokens of both images (source first, so the module is not symmetric):
``F = [F_src | F_trg]`` (B, 256, 2*768) -> ``g_d`` Linear(1536 -> D) -> ``g_n`` Linear(256 -> 256)
along the patch axis -> adaptive max pool 256 -> 50 -> ``tanh(alpha) * (x + pos)``. The learned
part of the prompt is ``[global (25) | cond (50)]``; framed by SOS/EOS it is one 77-token prompt
shared by both images. Parameter names follow the official checkpoint (``ckpt.pt``) so its
state dict loads as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import PromptError

__all__ = ["CPMConfig", "ConditionalPromptModule", "adaptive_max_pool1d", "assemble_prompt"]


@dataclass(frozen=True)
class CPMConfig:
    """Sizes of a ``Pair-DINO-Feat-G<global>-C<cond>`` module."""

    dino_dim: int = 768  # DINOv2 ViT-B/14 width
    text_dim: int = 1024  # CLIP text width D
    n_patch: int = 256  # 16 x 16 patches of a 224 crop
    global_length: int = 25
    cond_length: int = 50

    @property
    def name(self) -> str:
        return f"Pair-DINO-Feat-G{self.global_length}-C{self.cond_length}"


def _pool_bins(length: int, out: int) -> Tensor:
    """``(out, k)`` indices of PyTorch's adaptive pooling bins, padded by repeating a member."""
    starts = [(i * length) // out for i in range(out)]
    ends = [-((-(i + 1) * length) // out) for i in range(out)]  # ceil((i+1) L / out)
    k = max(e - s for s, e in zip(starts, ends))
    rows = [list(range(s, e)) + [s] * (k - (e - s)) for s, e in zip(starts, ends)]
    return torch.tensor(rows, dtype=torch.long)


def adaptive_max_pool1d(x: Tensor, out: int) -> Tensor:
    """``nn.AdaptiveMaxPool1d(out)`` over the last axis, written with a gather and a max.

    Equal to PyTorch's operator (bins ``[floor(iL/out), ceil((i+1)L/out))``), and exportable to
    ONNX for any ``L`` (the ONNX exporter only handles divisible sizes).

    Args:
        x: ``(B, C, L)``.

    Returns:
        ``(B, C, out)``.
    """
    bins = _pool_bins(x.shape[-1], out).to(x.device)  # (out, k)
    gathered = x[..., bins]  # (B, C, out, k)
    return gathered.amax(dim=-1)


#: The parameters of a Pair-DINO-Feat CPM and their ranks (official names).
_PARAMETER_RANKS = {
    "global_embeds": 3, "positional_embedding": 3, "alpha_cond": 3,
    "linear_C.weight": 2, "linear_C.bias": 1, "linear_N.weight": 2, "linear_N.bias": 1,
}  # fmt: skip


class ConditionalPromptModule(nn.Module):
    """CPM (Pair-DINO-Feat): two images' DINOv2 patch tokens -> the 75 learned prompt tokens.

    Parameters (official names): ``global_embeds`` (1, G, D), ``positional_embedding`` (1, C, D),
    ``alpha_cond`` (1, C, D), ``linear_C`` = g_d, ``linear_N`` = g_n. The three embeddings start
    as U[0, 1) and the linears with PyTorch's default init, as the official code.
    """

    def __init__(self, config: CPMConfig = CPMConfig()) -> None:
        super().__init__()
        self.config = config
        d = config.text_dim
        self.global_embeds = nn.Parameter(torch.rand(1, config.global_length, d))
        self.positional_embedding = nn.Parameter(torch.rand(1, config.cond_length, d))
        self.alpha_cond = nn.Parameter(torch.rand(1, config.cond_length, d))
        self.linear_C = nn.Linear(2 * config.dino_dim, d)  # g_d
        self.linear_N = nn.Linear(config.n_patch, config.n_patch)  # g_n

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ConditionalPromptModule:
        """Build a module whose sizes are read off an (official or SDK) state dict.

        Raises:
            PromptError: a parameter is missing, has the wrong rank or a size that does not fit
                the others (the message lists them).
        """
        state = {k: v for k, v in state.items() if not k.startswith("text_model_embeddings.")}
        missing = [k for k in _PARAMETER_RANKS if k not in state]
        if missing:
            raise PromptError(
                f"CPM checkpoint lacks {', '.join(missing)}; only Pair-DINO-Feat modules (linear_C, linear_N, "
                "global_embeds, positional_embedding, alpha_cond) are supported"
            )
        wrong_rank = {k: tuple(state[k].shape) for k, rank in _PARAMETER_RANKS.items() if state[k].ndim != rank}
        if wrong_rank:
            expected = ", ".join(f"{k}: {rank}-d" for k, rank in _PARAMETER_RANKS.items() if k in wrong_rank)
            raise PromptError(f"CPM checkpoint has parameters of the wrong rank {wrong_rank} (expected {expected}); the file is damaged or not a CPM")
        g = state["global_embeds"].shape[1]
        c, d = state["positional_embedding"].shape[1:]
        module = cls(CPMConfig(dino_dim=state["linear_C.weight"].shape[1] // 2, text_dim=d,
                               n_patch=state["linear_N.weight"].shape[0], global_length=g, cond_length=c))  # fmt: skip
        expected = module.state_dict()
        mismatched = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if k in expected and v.shape != expected[k].shape}
        unexpected = sorted(set(state) - set(expected))
        if mismatched or unexpected:
            raise PromptError(
                f"CPM checkpoint does not fit a {module.config.name} module: sizes (found, expected) {mismatched}, "
                f"unexpected {unexpected}; the file is damaged or comes from another CPM variant"
            )
        module.load_state_dict(state)
        return module

    def forward(self, dino_source: Tensor, dino_target: Tensor) -> Tensor:
        """Learned prompt tokens for a batch of pairs.

        Args:
            dino_source: ``(B, n_patch, dino_dim)`` DINOv2 patch tokens (CLS dropped).
            dino_target: same for the target images.

        Returns:
            ``(B, G + C, D)``: ``[global | cond]``.
        """
        cfg = self.config
        for name, feats in (("source", dino_source), ("target", dino_target)):
            if feats.ndim != 3 or feats.shape[1:] != (cfg.n_patch, cfg.dino_dim):
                raise PromptError(
                    f"CPM expects {name} DINOv2 tokens of shape (B, {cfg.n_patch}, {cfg.dino_dim}), got "
                    f"{tuple(feats.shape)}; use the DINOv2 model and 224-crop processor it was trained with"
                )
        x = torch.cat([dino_source, dino_target], dim=2).to(self.linear_C.weight.dtype)  # (B, 256, 1536)
        x = self.linear_C(x)  # g_d: (B, 256, D)
        x = self.linear_N(x.transpose(1, 2))  # g_n along patches: (B, D, 256)
        x = adaptive_max_pool1d(x, cfg.cond_length).transpose(1, 2)  # (B, C, D)
        cond = torch.tanh(self.alpha_cond) * (x + self.positional_embedding)
        return torch.cat([self.global_embeds.expand(x.shape[0], -1, -1), cond], dim=1)


def assemble_prompt(learned: Tensor, sos: Tensor, eos: Tensor) -> Tensor:
    """``[SOS+pos0 | learned | EOS+pos76]``: ``(B, 75, D)`` + ``(1, 1, D)`` x 2 -> ``(B, 77, D)``."""
    b = learned.shape[0]
    sos = sos.to(learned.dtype).expand(b, -1, -1)
    eos = eos.to(learned.dtype).expand(b, -1, -1)
    return torch.cat([sos, learned, eos], dim=1)
