"""Prompt files: ours (``.safetensors``) and the official formats, read without running code.

* ours: one ``.safetensors`` with a metadata header (``format=sd4match-prompt``, ``kind``,
  ``categories``, ``model_id``, ``timestep``, ``sdk_version``, CPM sizes); tensors
  ``token_embeds`` (single), ``token_embeds.<category>`` (class) or ``cpm.<param>`` (CPM).
* official: ``caption.pt`` = dict name -> (1, 77, D) token embeddings (one entry, key
  ``dataset``, is Single; several are Class), ``ckpt.pt`` = CPM state dict. Always read with
  ``torch.load(weights_only=True)``: a prompt file never runs code (docs/design.md §11, §13.8).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._version import __version__
from ..downloads.official import OFFICIAL_PREFIX, resolve_official_prompt
from ..errors import ConfigError, PromptError
from ..models.cpm import ConditionalPromptModule
from .types import PromptKind, PromptWeights

__all__ = ["PROMPT_FORMAT", "PROMPT_FORMAT_VERSION", "load_prompt", "load_prompt_file", "save_prompt"]

PROMPT_FORMAT = "sd4match-prompt"
PROMPT_FORMAT_VERSION = "1"
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_DIR_CANDIDATES = ("prompt.safetensors", "caption.pt", "ckpt.pt")


def _looks_like_file(prompt: str) -> bool:
    return prompt.lower().endswith(_FILE_SUFFIXES)


def load_prompt(prompt: str | os.PathLike | PromptWeights | None) -> PromptWeights:
    """Resolve the ``prompt`` argument of the public API.

    ``None`` -> the empty text prompt; ``"official:<name>"`` -> the authors' released prompt of
    that name (``sd4match download prompts`` fetches them; docs/design.md §12.5); an existing file
    or directory -> :func:`load_prompt_file`; a string that looks like a path (prompt-file suffix)
    but does not exist -> error; any other string -> a handcrafted text prompt.
    """
    if prompt is None:
        return PromptWeights.from_text("")
    if isinstance(prompt, PromptWeights):
        return prompt
    if isinstance(prompt, str) and prompt.startswith(OFFICIAL_PREFIX):
        return _load_official(prompt)
    if isinstance(prompt, os.PathLike) or Path(str(prompt)).exists():
        return load_prompt_file(prompt)
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be None, a text, a file path or PromptWeights (got {type(prompt).__name__})")
    if _looks_like_file(prompt):
        raise PromptError(f"prompt file not found: {prompt!r}; check the path (or pass a plain text prompt)")
    return PromptWeights.from_text(prompt)


def _load_official(name: str) -> PromptWeights:
    """An official prompt by name; its metadata records the name and the dataset it was tuned on."""
    official = resolve_official_prompt(name)
    weights = load_prompt_file(official.path)
    if str(weights.kind) != official.kind:
        raise PromptError(
            f"{official.path} holds a {weights.kind} prompt, but its directory {official.directory!r} names a "
            f"{official.kind} prompt; the archive's layout differs from docs/design.md §12.1"
        )
    weights.metadata.update(name=OFFICIAL_PREFIX + official.name, dataset=official.dataset)
    return weights


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
