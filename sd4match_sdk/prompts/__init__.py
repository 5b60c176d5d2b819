"""Prompts: what they are (:mod:`.types`), their files (:mod:`.files`), the contexts they give the
UNet (:mod:`.context`) and the trainable modules that learn them (:mod:`.trainable`)."""

from .context import PromptContexts
from .files import PROMPT_FORMAT, load_prompt, load_prompt_file, save_prompt
from .types import PromptKind, PromptWeights

__all__ = ["PROMPT_FORMAT", "PromptContexts", "PromptKind", "PromptWeights", "load_prompt", "load_prompt_file", "save_prompt"]
