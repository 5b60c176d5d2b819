"""Trainable prompts: Single, Class and CPM (docs/design.md §4.3, §4.4).

Each module produces the 77 token-level embeddings ``[SOS+pos0 | 75 learned | EOS+pos76]`` of a
pair; they go through the frozen CLIP text encoder (gradients flow through it) into the UNet.
The frozen SOS/EOS embeddings are buffers taken from the text encoder; only the learned part is a
parameter.

Initialisation (docs/design.md §4.3): Single/Class draw 75 vocabulary ids uniformly, pass ``[SOS, ids, EOS]``
through the text embedding layer (token + *position* embeddings) and keep slice ``1:76``; the
CPM starts as :class:`~sd4match_sdk.models.cpm.ConditionalPromptModule` does (U[0, 1) and
PyTorch's default linear init). Every draw comes from ``seed``, never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, UnknownCategoryError
from ..models.cpm import ConditionalPromptModule, CPMConfig, assemble_prompt
from ..models.text import special_token_embeddings, text_transformer, text_width
from .types import PromptKind, PromptWeights

__all__ = [
    "TrainablePrompt",
    "SinglePrompt",
    "ClassPrompt",
    "CPMPrompt",
    "random_token_prompt",
    "build_trainable_prompt",
]


@torch.no_grad()
def random_token_prompt(tokenizer: Any, text_encoder: nn.Module, generator: torch.Generator) -> Tensor:
    """``(1, L-2, D)`` token-level embeddings of random vocabulary ids, with position embeddings.

    ``[SOS, id_1 .. id_75, EOS]`` through the embedding layer; positions 1..75 are returned.
    """
    length = int(text_encoder.config.max_position_embeddings)
    embeddings = text_transformer(text_encoder).embeddings
    device = embeddings.token_embedding.weight.device
    ids = torch.randint(0, int(tokenizer.vocab_size), (length - 2,), generator=generator)
    full = torch.cat([torch.tensor([tokenizer.bos_token_id]), ids, torch.tensor([tokenizer.eos_token_id])])
    embeds = embeddings(input_ids=full[None].to(device))  # (1, L, D)
    return embeds[:, 1:-1].detach().float().clone()


class TrainablePrompt(nn.Module):
    """Base: frozen SOS/EOS buffers and the interface the trainer uses.

    Args:
        tokenizer, text_encoder: the SD tokenizer and CLIP text encoder (frozen).
    """

    kind: PromptKind

    def __init__(self, tokenizer: Any, text_encoder: nn.Module) -> None:
        super().__init__()
        self.length = int(text_encoder.config.max_position_embeddings)
        self.width = text_width(text_encoder)
        sos, eos = special_token_embeddings(tokenizer, text_encoder, self.length)
        self.register_buffer("sos", sos.detach().float().clone(), persistent=False)
        self.register_buffer("eos", eos.detach().float().clone(), persistent=False)

    @property
    def learnable_length(self) -> int:
        return self.length - 2

    def param_groups(self, lr: float, network_lr: float) -> list[dict]:
        """Adam parameter groups (``network_lr`` applies to CPM's linear layers only)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def token_embeds(self, categories: Sequence[str], dino0: Tensor | None = None, dino1: Tensor | None = None) -> Tensor:
        """``(P, 77, D)`` token-level prompts of P pairs (one per pair, shared by its two images)."""
        raise NotImplementedError

    def to_weights(self) -> PromptWeights:
        """The current prompt in the SDK's format (saved with :func:`~sd4match_sdk.prompts.save_prompt`)."""
        raise NotImplementedError


class SinglePrompt(TrainablePrompt):
    """One learned prompt for the whole dataset: ``learned`` of shape ``(1, 75, D)``."""

    kind = PromptKind.SINGLE

    def __init__(self, tokenizer: Any, text_encoder: nn.Module, generator: torch.Generator) -> None:
        super().__init__(tokenizer, text_encoder)
        self.learned = nn.Parameter(random_token_prompt(tokenizer, text_encoder, generator))

    def token_embeds(self, categories: Sequence[str], dino0: Tensor | None = None, dino1: Tensor | None = None) -> Tensor:
        return assemble_prompt(self.learned, self.sos, self.eos).expand(len(categories), -1, -1)

    def to_weights(self) -> PromptWeights:
        full = assemble_prompt(self.learned, self.sos, self.eos).detach().cpu()
        return PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": full})


class ClassPrompt(TrainablePrompt):
    """One learned prompt per category (sorted names, as the official code), ``(1, 75, D)`` each.

    The prompts are separate parameters so that Adam only moves those whose category was in
    the batch.
    """

    kind = PromptKind.CLASS

    def __init__(self, tokenizer: Any, text_encoder: nn.Module, categories: Sequence[str], generator: torch.Generator) -> None:
        super().__init__(tokenizer, text_encoder)
        self.categories = sorted(set(categories))
        if not self.categories:
            raise ConfigError("a Class prompt needs at least one category")
        self.learned = nn.ParameterList(
            [nn.Parameter(random_token_prompt(tokenizer, text_encoder, generator)) for _ in self.categories]
        )
        self._index = {c: i for i, c in enumerate(self.categories)}

    def token_embeds(self, categories: Sequence[str], dino0: Tensor | None = None, dino1: Tensor | None = None) -> Tensor:
        rows = []
        for category in categories:
            if category not in self._index:
                raise UnknownCategoryError(category, self.categories)
            rows.append(assemble_prompt(self.learned[self._index[category]], self.sos, self.eos))
        return torch.cat(rows)

    def to_weights(self) -> PromptWeights:
        embeds = {
            c: assemble_prompt(self.learned[i], self.sos, self.eos).detach().cpu() for i, c in enumerate(self.categories)
        }
        return PromptWeights(PromptKind.CLASS, token_embeds=embeds)


class CPMPrompt(TrainablePrompt):
    """The Conditional Prompting Module: the prompt of a pair from both images' DINOv2 tokens."""

    kind = PromptKind.CPM

    def __init__(self, tokenizer: Any, text_encoder: nn.Module, config: CPMConfig, generator: torch.Generator) -> None:
        super().__init__(tokenizer, text_encoder)
        if config.text_dim != self.width or config.global_length + config.cond_length != self.learnable_length:
            raise ConfigError(
                f"CPM {config.name} with width {config.text_dim} does not fit the text encoder "
                f"(width {self.width}, {self.learnable_length} learnable tokens)"
            )
        # The module draws its U[0, 1) embeddings and linear init from the global RNG: seed it
        # locally so the run is reproducible without touching the caller's RNG state.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cpm = ConditionalPromptModule(config)

    def param_groups(self, lr: float, network_lr: float) -> list[dict]:
        """g_d and g_n (``linear_C``, ``linear_N``) at ``network_lr``; the embeddings at ``lr``."""
        network = [p for n, p in self.cpm.named_parameters() if n.startswith("linear")]
        explicit = [p for n, p in self.cpm.named_parameters() if not n.startswith("linear")]
        return [{"params": explicit, "lr": lr}, {"params": network, "lr": network_lr}]

    def token_embeds(self, categories: Sequence[str], dino0: Tensor | None = None, dino1: Tensor | None = None) -> Tensor:
        if dino0 is None or dino1 is None:
            raise ConfigError("a CPM prompt needs the DINOv2 tokens of both images")
        return assemble_prompt(self.cpm(dino0, dino1), self.sos, self.eos)

    def to_weights(self) -> PromptWeights:
        state = {k: v.detach().cpu().clone() for k, v in self.cpm.state_dict().items()}
        return PromptWeights(PromptKind.CPM, cpm_state=state)


def build_trainable_prompt(
    kind: str | PromptKind,
    tokenizer: Any,
    text_encoder: nn.Module,
    seed: int,
    categories: Sequence[str] = (),
    cpm_config: CPMConfig | None = None,
) -> TrainablePrompt:
    """A freshly initialised trainable prompt of ``kind`` (single, class or cpm)."""
    try:
        kind = PromptKind(kind)
    except ValueError:
        raise ConfigError(f"unknown prompt kind {kind!r}; choose one of: single, class, cpm") from None
    generator = torch.Generator().manual_seed(int(seed))
    if kind is PromptKind.SINGLE:
        return SinglePrompt(tokenizer, text_encoder, generator)
    if kind is PromptKind.CLASS:
        return ClassPrompt(tokenizer, text_encoder, categories, generator)
    if kind is PromptKind.CPM:
        if cpm_config is None:
            raise ConfigError("a CPM prompt needs its CPMConfig (DINOv2 width, text width, lengths)")
        return CPMPrompt(tokenizer, text_encoder, cpm_config, generator)
    raise ConfigError(f"cannot train a {kind} prompt; choose single, class or cpm")
