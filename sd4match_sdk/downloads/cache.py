"""Where the SDK keeps what it downloads itself: ``$SD4MATCH_CACHE``, else the user's cache directory.

Model weights go to the Hugging Face cache (or ``--dir``), as the hub's own tools do; the SDK's
cache holds the official prompt archive, its record and its extracted files (docs/design.md §12.5).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

#: Environment variable naming the SDK's cache directory.
CACHE_ENV = "SD4MATCH_CACHE"


def cache_dir() -> Path:
    """``$SD4MATCH_CACHE``, else ``$XDG_CACHE_HOME/sd4match``, else ``~/.cache/sd4match``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sd4match"
