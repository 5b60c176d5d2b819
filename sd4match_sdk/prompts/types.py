"""What a prompt is, independent of any model or device: its kind and its tensors (docs/design.md §4).

Kinds: a **text** prompt (``None`` means the empty string; ``"a photo of a {category}"`` is
filled per pair), a learned **single** prompt, a learned **class** prompt (one per category),
and the **CPM**, which builds the prompt from DINOv2 tokens of both images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from torch import Tensor

__all__ = ["PromptKind", "PromptWeights"]


class PromptKind(StrEnum):
    """How a prompt reaches the UNet (see the module docstring)."""

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
