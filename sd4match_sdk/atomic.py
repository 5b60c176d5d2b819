"""Writing files so that a kill never leaves a torn one, with the permissions of a normal file.

Every file the SDK writes (prompts, training states, JSON reports, configs, engine manifests,
cached DINOv2 tokens) goes through :func:`atomic_path`: the content is written to a temporary
file next to the destination, which is renamed over it only once it is complete, so a reader
sees the old file or the new one (docs/design.md §13.17). The temporary file is created with
mode ``0o666`` filtered by the process umask, as ``open()`` would create the destination
(``0644`` under the usual umask 022), not the ``0600`` of :func:`tempfile.mkstemp`. Standard
library only, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TEMP_SUFFIX", "atomic_path", "write_json", "write_text"]

#: Suffix of the temporary files; engine hashing and cleanup skip files that end with it.
TEMP_SUFFIX = ".tmp"


def _create_temporary(path: Path) -> Path:
    """A new empty file next to ``path``, created as ``open(path, "w")`` would (umask applies)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {str(path)!r}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The parent folder is created when missing. The temporary file already exists (empty) when
    the block starts, with the permissions ``open()`` would give; a writer that replaces it
    instead of writing into it (safetensors' ``save_file`` creates 0600 files) gets those
    permissions back before the rename.

    Example:
        >>> with atomic_path("state.pt") as tmp:  # doctest: +SKIP
        ...     torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    wanted = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 & ~umask, without reading the umask
    try:
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != wanted:  # writers that replace the file (safetensors) make it 0600
            os.chmod(tmp, wanted)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(payload, indent=2) + "\n")
