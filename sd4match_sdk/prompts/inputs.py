"""A command's prompt arguments, read and checked before any model loads (cheap inputs first)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError, UnknownCategoryError
from .files import load_prompt
from .types import PromptKind, PromptWeights

__all__ = ["prompt_for_model"]


def prompt_for_model(
    prompt: str | None, categories: Sequence[str | None] = (None,), engine: bool = False
) -> PromptWeights | None:
    """The prompt for ``Matcher.from_pretrained(model, prompt=...)``, read now, with the categories
    it will be asked for checked.

    Args:
        prompt: the ``--prompt`` argument.
        categories: the categories the command will use (``[--category]``; a dataset's categories).
        engine: the model is an engine directory: without a prompt, ``None`` is returned (its
            prompt is baked in).

    Raises:
        PromptError: the prompt cannot be read (a missing official download names its command).
        UnknownCategoryError / ConfigError: a Class prompt or ``{category}`` text without a category it knows.
    """
    if prompt is None and engine:
        return None
    weights = load_prompt(prompt)
    for category in categories:
        if weights.kind is PromptKind.CLASS and category not in weights.categories:
            raise UnknownCategoryError(category, weights.categories)
        if weights.kind is PromptKind.TEXT and "{category}" in (weights.text or "") and category is None:
            raise ConfigError(f"the text prompt {weights.text!r} is filled per category: pass --category")
    return weights
