"""Where the SDK keeps what it downloads itself: ``$SD4MATCH_CACHE``, else the user's cache directory.

Model weights go to the Hugging Face cache (or ``--dir``), as the hub's own tools do; the SDK's
cache holds the official prompt archive, its record and its extracted files (docs/design.md §12.5).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir", "write_text_atomic"]

#: Environment variable naming the SDK's cache directory.
CACHE_ENV = "SD4MATCH_CACHE"


def cache_dir() -> Path:
    """``$SD4MATCH_CACHE``, else ``$XDG_CACHE_HOME/sd4match``, else ``~/.cache/sd4match``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sd4match"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: a kill leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
