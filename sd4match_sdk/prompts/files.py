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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._version import __version__
from ..atomic import atomic_path
from ..downloads.official import OFFICIAL_PREFIX, resolve_official_prompt
from ..errors import ConfigError, PromptError
from ..models.cpm import ConditionalPromptModule
from .types import PromptKind, PromptWeights

__all__ = [
    "PROMPT_FORMAT",
    "PROMPT_FORMAT_VERSION",
    "check_prompt_weights",
    "load_prompt",
    "load_prompt_file",
    "looks_like_path",
    "save_prompt",
]

PROMPT_FORMAT = "sd4match-prompt"
PROMPT_FORMAT_VERSION = "1"
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_DIR_CANDIDATES = ("prompt.safetensors", "caption.pt", "ckpt.pt")


def looks_like_path(prompt: str) -> bool:
    """True when a prompt string is meant as a file or directory, not as a text (docs/design.md §13.16).

    A known prompt-file suffix, a trailing separator, a leading ``/``, ``./``, ``../``, ``~`` or
    drive letter, or a separator in a string without spaces (``runs/single/best``). A text with a
    slash between words (``"a photo of a cat/dog"``) stays a text.
    """
    text = prompt.strip()
    separators = ("/", os.sep) + ((os.altsep,) if os.altsep else ())
    if text.lower().endswith(_FILE_SUFFIXES) or text.endswith(separators):
        return True
    if text.startswith(("/", "./", "../", "~", "\\")) or (len(text) > 2 and text[1] == ":" and text[2] in "/\\"):
        return True
    return any(sep in text for sep in separators) and not any(ch.isspace() for ch in text)


def load_prompt(prompt: str | os.PathLike | PromptWeights | None) -> PromptWeights:
    """Resolve the ``prompt`` argument of the public API.

    ``None`` -> the empty text prompt; ``"official:<name>"`` -> the authors' released prompt of
    that name (``sd4match download prompts`` fetches them; docs/design.md §12.5); an existing file
    or directory -> :func:`load_prompt_file`; a string that looks like a path
    (:func:`looks_like_path`) but does not exist -> error; any other string -> a handcrafted text
    prompt. Every prompt is checked by value (:func:`check_prompt_weights`).

    Raises:
        PromptError: a missing prompt file, or a prompt whose tensors are not what its kind needs.
        ConfigError: ``prompt`` is of another type.
    """
    if prompt is None:
        return PromptWeights.from_text("")
    if isinstance(prompt, PromptWeights):
        return check_prompt_weights(prompt)
    if isinstance(prompt, str) and prompt.startswith(OFFICIAL_PREFIX):
        return _load_official(prompt)
    if not isinstance(prompt, (str, os.PathLike)):
        raise ConfigError(f"prompt must be None, a text, a file path or PromptWeights (got {type(prompt).__name__})")
    if isinstance(prompt, os.PathLike) or (prompt.strip() and Path(prompt).exists()):
        return load_prompt_file(prompt)
    if looks_like_path(prompt):
        raise PromptError(
            f"prompt file not found: {prompt!r}; check the path. For a text prompt that looks like a "
            "path, pass PromptWeights.from_text(text)"
        )
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
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (pickle, zip, EOF, OS)
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
    tensors = _float_tensors({str(k): v.detach().cpu() for k, v in content.items()}, path)
    if "linear_C.weight" in tensors or "global_embeds" in tensors:
        state = {k: v for k, v in tensors.items() if not k.startswith("text_model_embeddings.")}
        return check_prompt_weights(PromptWeights(PromptKind.CPM, cpm_state=state, metadata={"source": str(path)}), path)
    bad = {k: tuple(v.shape) for k, v in tensors.items() if v.ndim != 3 or v.shape[0] != 1}
    if bad:
        raise PromptError(
            f"unknown prompt file format in {str(path)!r}: entries {bad} are not (1, L, D) token "
            "embeddings and no CPM parameters were found"
        )
    kind = PromptKind.SINGLE if len(tensors) == 1 else PromptKind.CLASS
    return check_prompt_weights(PromptWeights(kind, token_embeds=tensors, metadata={"source": str(path)}), path)


def _load_safetensors(path: Path) -> PromptWeights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
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
    if kind is PromptKind.TEXT:
        raise PromptError(f"{str(path)!r}: text prompts are not stored in files; pass the text itself")
    return check_prompt_weights(_weights_of_kind(kind, _float_tensors(tensors, path), meta, path), path)


def _weights_of_kind(kind: PromptKind, tensors: dict[str, Tensor], meta: dict[str, str], path: Path) -> PromptWeights:
    """Our file's tensors as the prompt its header names: ``token_embeds`` (single),
    ``token_embeds.<category>`` (class) or ``cpm.<param>`` (CPM), nothing else."""
    prefix = {PromptKind.SINGLE: "token_embeds", PromptKind.CLASS: "token_embeds.", PromptKind.CPM: "cpm."}[kind]
    foreign = sorted(k for k in tensors if not (k == prefix if kind is PromptKind.SINGLE else k.startswith(prefix)))
    if foreign or not tensors:
        expected = {PromptKind.SINGLE: "'token_embeds'", PromptKind.CLASS: "'token_embeds.<category>'", PromptKind.CPM: "'cpm.<parameter>'"}[kind]
        raise PromptError(
            f"{str(path)!r} says kind={kind} but holds tensors {foreign or 'none'}; a {kind} prompt holds {expected} "
            "tensors only. The header does not match the tensors: re-save the prompt with sd4match_sdk.save_prompt"
        )
    if kind is PromptKind.SINGLE:
        return PromptWeights(kind, token_embeds={"dataset": tensors["token_embeds"]}, metadata=meta)
    if kind is PromptKind.CLASS:
        return PromptWeights(kind, token_embeds={k.split(".", 1)[1]: v for k, v in tensors.items()}, metadata=meta)
    return PromptWeights(kind, cpm_state={k.split(".", 1)[1]: v for k, v in tensors.items()}, metadata=meta)


def _float_tensors(tensors: dict[str, Tensor], path: Path | str) -> dict[str, Tensor]:
    """float32 copies of a file's tensors, refusing integer/bool/complex ones (never cast
    silently) and NaN/inf values, under the names the file uses."""
    wrong = {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items() if not v.is_floating_point()}
    if wrong:
        raise PromptError(
            f"{str(path)!r} holds non-floating-point tensors {wrong}; prompt tensors are float32/float16/bfloat16 "
            "embeddings. The file is damaged or not a prompt: re-save it with sd4match_sdk.save_prompt"
        )
    _check_values(tensors, str(path))
    return {k: v.float() for k, v in tensors.items()}


def check_prompt_weights(weights: PromptWeights, source: str | os.PathLike = "the prompt") -> PromptWeights:
    """Check a prompt by value before it is used (docs/design.md §13.16), and return it.

    * single: exactly one ``(1, L, D)`` token-embedding tensor; class: one or more, all of one
      shape, with non-empty category names; cpm: a Pair-DINO-Feat state dict whose parameters
      have the right ranks and sizes (:meth:`ConditionalPromptModule.from_state_dict`);
      text: a string;
    * every tensor floating point and finite (a NaN embedding gives NaN matches).

    Raises:
        PromptError: naming the prompt, the offending tensor and what to do.
    """
    where = str(source)
    kind = weights.kind
    if kind is PromptKind.TEXT:
        if not isinstance(weights.text, str):
            raise PromptError(f"{where}: a text prompt needs a string (got {type(weights.text).__name__}); use PromptWeights.from_text")
        return weights
    tensors = dict(weights.token_embeds) if kind is not PromptKind.CPM else dict(weights.cpm_state or {})
    _check_values(tensors, where)
    if kind is PromptKind.CPM:
        try:
            ConditionalPromptModule.from_state_dict(tensors)  # ranks and sizes, now rather than at first use
        except PromptError as err:
            raise PromptError(f"{where}: {err}") from None
        return weights
    _check_token_embeds(kind, tensors, where)
    return weights


def _check_values(tensors: dict[str, Tensor], where: str) -> None:
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            kind = str(tensor.dtype).removeprefix("torch.") if isinstance(tensor, Tensor) else type(tensor).__name__
            raise PromptError(f"{where}: prompt tensor {name!r} is {kind}, not floating point; pass float32 embeddings")
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise PromptError(
                f"{where}: prompt tensor {name!r} holds {bad} NaN/inf value(s) and would give NaN matches; the "
                "prompt is broken (e.g. a diverged training run): use an earlier prompt file, or retrain"
            )


def _check_token_embeds(kind: PromptKind, tensors: dict[str, Tensor], where: str) -> None:
    if kind is PromptKind.SINGLE and len(tensors) != 1:
        raise PromptError(f"{where}: a single prompt holds one token-embedding tensor, not {len(tensors)}; for one per category use kind=class")
    if not tensors or any(not isinstance(name, str) or not name for name in tensors):
        raise PromptError(f"{where}: a class prompt needs one tensor per named category (got {sorted(map(repr, tensors))})")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    bad = {name: shape for name, shape in shapes.items() if len(shape) != 3 or shape[0] != 1}
    if bad or len(set(shapes.values())) > 1:
        raise PromptError(
            f"{where}: token embeddings must all be (1, L, D) of one shape (got {bad or shapes}); the file is "
            "damaged or comes from another model"
        )


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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path
