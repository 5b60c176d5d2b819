"""Package attributes imported on first use (PEP 562), so ``--help`` never imports torch.

A package's ``__init__`` lists its public names and the submodule of each; ``from pkg import Name``
and ``pkg.Name`` import that submodule then. The console scripts live in submodules of these
packages, and their argument parsing must not wait for torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``names`` map to submodules (relative, ``.matcher``).

    Example::

        __getattr__, __dir__ = lazy_attributes(__name__, {"Matcher": ".matcher"})
    """
    module_globals: dict[str, Any] = {}

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if name not in module_globals:
            module_globals[name] = getattr(importlib.import_module(names[name], package), name)
        return module_globals[name]

    def __dir__() -> list[str]:
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__
