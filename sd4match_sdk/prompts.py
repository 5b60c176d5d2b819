"""Prompts: what a prompt file holds, how it is read and written, and how it becomes a context.

Kinds (SPEC 2): a **text** prompt (``None`` means the empty string; ``"a photo of a {category}"``
is filled per pair), a learned **single** prompt, a learned **class** prompt (one per category),
and the **CPM**, which builds the prompt from DINOv2 tokens of both images.

Files:

* ours: one ``.safetensors`` with a metadata header (``format=sd4match-prompt``, ``kind``,
  ``categories``, ``model_id``, ``timestep``, ``sdk_version``, CPM sizes); tensors
  ``token_embeds`` (single), ``token_embeds.<category>`` (class) or ``cpm.<param>`` (CPM).
* official: ``caption.pt`` = dict name -> (1, 77, D) token embeddings (one entry, key
  ``dataset``, is Single; several are Class), ``ckpt.pt`` = CPM state dict. Always read with
  ``torch.load(weights_only=True)``: a prompt file never runs code.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._version import __version__
from .errors import ConfigError, PromptError, UnknownCategoryError
from .models.cpm import ConditionalPromptModule, assemble_prompt
from .models.text import encode_token_embeddings, special_token_embeddings, text_width, token_embeddings_for_text

__all__ = [
    "PromptKind",
    "PromptWeights",
    "PromptContexts",
    "load_prompt",
    "load_prompt_file",
    "save_prompt",
    "PROMPT_FORMAT",
]

PROMPT_FORMAT = "sd4match-prompt"
PROMPT_FORMAT_VERSION = "1"
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_DIR_CANDIDATES = ("prompt.safetensors", "caption.pt", "ckpt.pt")


class PromptKind(StrEnum):
    TEXT = "text"
    SINGLE = "single"
    CLASS = "class"
    CPM = "cpm"


@dataclass
class PromptWeights:
    """The content of a prompt, independent of any model or device.

    Attributes:
        kind: text, single, class or cpm.
        token_embeds: single: ``{"dataset": (1, 77, D)}``; class: ``{category: (1, 77, D)}``.
        cpm_state: CPM state dict (official parameter names), for kind cpm.
        text: the text, for kind text (``""`` is the empty prompt).
        metadata: free-form strings (model id, trained timestep, ...).
    """

    kind: PromptKind
    token_embeds: dict[str, Tensor] = field(default_factory=dict)
    cpm_state: dict[str, Tensor] | None = None
    text: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        """Category names of a class prompt (sorted); empty otherwise."""
        return sorted(self.token_embeds) if self.kind is PromptKind.CLASS else []

    @classmethod
    def from_text(cls, text: str = "") -> PromptWeights:
        return cls(PromptKind.TEXT, text=text)


def _looks_like_file(prompt: str) -> bool:
    return prompt.lower().endswith(_FILE_SUFFIXES)


def load_prompt(prompt: str | os.PathLike | PromptWeights | None) -> PromptWeights:
    """Resolve the ``prompt`` argument of the public API.

    ``None`` -> the empty text prompt; an existing file or directory -> :func:`load_prompt_file`;
    a string that looks like a path (prompt-file suffix) but does not exist -> error; any other
    string -> a handcrafted text prompt.
    """
    if prompt is None:
        return PromptWeights.from_text("")
    if isinstance(prompt, PromptWeights):
        return prompt
    if isinstance(prompt, os.PathLike) or Path(str(prompt)).exists():
        return load_prompt_file(prompt)
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be None, a text, a file path or PromptWeights (got {type(prompt).__name__})")
    if _looks_like_file(prompt):
        raise PromptError(f"prompt file not found: {prompt!r}; check the path (or pass a plain text prompt)")
    return PromptWeights.from_text(prompt)


def load_prompt_file(path: str | os.PathLike) -> PromptWeights:
    """Read a prompt in our ``.safetensors`` format or the official ``caption.pt`` / ``ckpt.pt``.

    A directory is searched for ``prompt.safetensors``, ``caption.pt`` or ``ckpt.pt`` (the
    official ``asset/sd4match/prompt/<name>/`` layout).

    Raises:
        PromptError: missing file, unreadable content, or an unknown layout.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in _DIR_CANDIDATES if (path / name).is_file()]
        if not found:
            raise PromptError(f"no prompt file in directory {str(path)!r}; expected one of {', '.join(_DIR_CANDIDATES)}")
        path = found[0]
    if not path.is_file():
        raise PromptError(f"prompt file not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise PromptError(
            f"cannot read prompt file {str(path)!r} as a weights-only torch checkpoint ({err}); "
            "expected our .safetensors, an official caption.pt or an official CPM ckpt.pt"
        ) from None
    return _from_official(content, path)


def _from_official(content: Any, path: Path) -> PromptWeights:
    if not isinstance(content, dict) or not content or not all(isinstance(v, Tensor) for v in content.values()):
        raise PromptError(
            f"unknown prompt file format in {str(path)!r}: expected a dict of tensors "
            "(caption.pt: name -> (1, 77, D); ckpt.pt: CPM state dict)"
        )
    tensors = {str(k): v.detach().float().cpu() for k, v in content.items()}
    if "linear_C.weight" in tensors or "global_embeds" in tensors:
        state = {k: v for k, v in tensors.items() if not k.startswith("text_model_embeddings.")}
        ConditionalPromptModule.from_state_dict(state)  # validates the layout now, not at first use
        return PromptWeights(PromptKind.CPM, cpm_state=state, metadata={"source": str(path)})
    bad = {k: tuple(v.shape) for k, v in tensors.items() if v.ndim != 3 or v.shape[0] != 1}
    if bad:
        raise PromptError(
            f"unknown prompt file format in {str(path)!r}: entries {bad} are not (1, L, D) token "
            "embeddings and no CPM parameters were found"
        )
    kind = PromptKind.SINGLE if len(tensors) == 1 else PromptKind.CLASS
    return PromptWeights(kind, token_embeds=tensors, metadata={"source": str(path)})


def _load_safetensors(path: Path) -> PromptWeights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise PromptError(f"cannot read {str(path)!r} as safetensors ({err})") from None
    if meta.get("format") != PROMPT_FORMAT:
        raise PromptError(
            f"{str(path)!r} is a safetensors file but not an sd4match prompt (metadata format="
            f"{meta.get('format')!r}); save prompts with sd4match_sdk.prompts.save_prompt"
        )
    if meta.get("format_version") != PROMPT_FORMAT_VERSION:
        raise PromptError(
            f"{str(path)!r} has prompt format version {meta.get('format_version')!r}; this SDK "
            f"({__version__}) reads version {PROMPT_FORMAT_VERSION}. Upgrade the SDK."
        )
    try:
        kind = PromptKind(meta.get("kind"))
    except ValueError:
        raise PromptError(f"{str(path)!r} has unknown prompt kind {meta.get('kind')!r}") from None
    if kind is PromptKind.SINGLE:
        return PromptWeights(kind, token_embeds={"dataset": tensors["token_embeds"]}, metadata=meta)
    if kind is PromptKind.CLASS:
        embeds = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("token_embeds.")}
        return PromptWeights(kind, token_embeds=embeds, metadata=meta)
    if kind is PromptKind.CPM:
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("cpm.")}
        ConditionalPromptModule.from_state_dict(state)
        return PromptWeights(kind, cpm_state=state, metadata=meta)
    raise PromptError(f"{str(path)!r}: text prompts are not stored in files")


def save_prompt(path: str | os.PathLike, weights: PromptWeights, **metadata: Any) -> Path:
    """Write a prompt in our ``.safetensors`` format, atomically (temp file + rename).

    Args:
        path: destination (``.safetensors``).
        weights: a single, class or cpm prompt.
        **metadata: extra header entries (``model_id``, ``timestep``, ...); stored as strings.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if weights.kind is PromptKind.SINGLE:
        (embeds,) = weights.token_embeds.values()
        tensors = {"token_embeds": embeds}
    elif weights.kind is PromptKind.CLASS:
        tensors = {f"token_embeds.{k}": v for k, v in weights.token_embeds.items()}
    elif weights.kind is PromptKind.CPM and weights.cpm_state is not None:
        tensors = {f"cpm.{k}": v for k, v in weights.cpm_state.items()}
    else:
        raise PromptError(f"cannot save a {weights.kind} prompt; save single, class or cpm prompts")
    header = {k: str(v) for k, v in {**weights.metadata, **metadata}.items() if k != "source"}
    header.update(
        format=PROMPT_FORMAT,
        format_version=PROMPT_FORMAT_VERSION,
        kind=str(weights.kind),
        categories=json.dumps(weights.categories),
        sdk_version=__version__,
    )
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class PromptContexts:
    """Turns a prompt into UNet cross-attention contexts with a frozen CLIP text encoder.

    Fixed contexts (text, single, class) are computed once and cached; the CPM context is built
    per pair from DINOv2 tokens.

    Args:
        weights: the prompt.
        tokenizer: the SD tokenizer.
        text_encoder: the SD ``CLIPTextModel`` (its device and dtype are used).
    """

    def __init__(self, weights: PromptWeights, tokenizer: Any, text_encoder: Any) -> None:
        self.weights = weights
        self.kind = weights.kind
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.width = text_width(text_encoder)
        self.length = int(text_encoder.config.max_position_embeddings)
        self._cache: dict[str | None, Tensor] = {}
        self.cpm: ConditionalPromptModule | None = None
        device = next(text_encoder.parameters()).device
        for name, embeds in weights.token_embeds.items():
            if embeds.shape != (1, self.length, self.width):
                raise PromptError(
                    f"prompt entry {name!r} has shape {tuple(embeds.shape)}, but this text encoder takes "
                    f"(1, {self.length}, {self.width}); the prompt belongs to another model"
                )
        if weights.kind is PromptKind.CPM:
            self.cpm = ConditionalPromptModule.from_state_dict(weights.cpm_state or {}).to(device).eval()
            cfg = self.cpm.config
            if cfg.text_dim != self.width or cfg.global_length + cfg.cond_length != self.length - 2:
                raise PromptError(
                    f"CPM ({cfg.name}, width {cfg.text_dim}) does not fit this text encoder (width "
                    f"{self.width}, {self.length - 2} learnable tokens)"
                )

    @property
    def categories(self) -> list[str]:
        return self.weights.categories

    @property
    def needs_category(self) -> bool:
        return self.kind is PromptKind.CLASS or (self.kind is PromptKind.TEXT and "{category}" in (self.weights.text or ""))

    def _check_category(self, category: str | None) -> None:
        if self.kind is PromptKind.CLASS and category not in self.weights.token_embeds:
            raise UnknownCategoryError(category, self.categories)
        if self.needs_category and category is None:
            raise ConfigError(f"the text prompt {self.weights.text!r} needs category=...")

    def fixed(self, category: str | None = None) -> Tensor:
        """``(1, 77, D)`` context of a text, single or class prompt (class: of ``category``)."""
        if self.kind is PromptKind.CPM:
            raise ConfigError("a CPM prompt depends on both images; use pair contexts (match) instead")
        self._check_category(category)
        key = category if self.needs_category else None
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = self._encode_fixed(key)
        return self._cache[key]

    def _encode_fixed(self, category: str | None) -> Tensor:
        device = next(self.text_encoder.parameters()).device
        if self.kind is PromptKind.TEXT:
            text = (self.weights.text or "").replace("{category}", category or "")
            embeds = token_embeddings_for_text(self.tokenizer, self.text_encoder, [text])
        elif self.kind is PromptKind.SINGLE:
            (embeds,) = self.weights.token_embeds.values()
        else:
            embeds = self.weights.token_embeds[category]  # type: ignore[index]
        return encode_token_embeddings(self.text_encoder, embeds.to(device))

    def special_tokens(self) -> tuple[Tensor, Tensor]:
        """SOS+pos0 and EOS+pos76 embeddings, ``(1, 1, D)`` each."""
        return special_token_embeddings(self.tokenizer, self.text_encoder, self.length)

    def pair(self, dino_source: Tensor, dino_target: Tensor) -> Tensor:
        """``(B, 77, D)`` CPM contexts of B pairs from their DINOv2 patch tokens."""
        if self.cpm is None:
            raise ConfigError("pair contexts exist only for CPM prompts")
        sos, eos = self.special_tokens()
        device = sos.device
        learned = self.cpm(dino_source.to(device), dino_target.to(device))
        return encode_token_embeddings(self.text_encoder, assemble_prompt(learned, sos, eos))
