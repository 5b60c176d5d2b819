"""An engine directory on disk: reading and writing its manifest, and the checks made before it runs.

The manifest is written last by the exporter, so a directory without one is an unfinished
export. Readers refuse, with an :class:`~sd4match_sdk.errors.EngineError` that says what to
rebuild: an unknown format version, a manifest written by a newer or incompatible SDK, a file
whose sha256 differs from the manifest, and TensorRT plans built for another GPU or TensorRT
version. Standard library only, so the checks cost nothing beyond hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import EngineError
from .format import ENGINE_FORMAT, FORMAT_VERSION, MANIFEST_FILE
from .manifest import EngineManifest, FileEntry, TensorRTInfo

__all__ = [
    "check_plan_compatibility",
    "check_sdk_compatible",
    "file_sha256",
    "hash_directory",
    "is_engine_directory",
    "parse_version",
    "read_manifest",
    "verify_files",
    "write_manifest",
]

_REEXPORT = "re-export it with this SDK: sd4match-export --model ... --prompt ... --out DIR"


def is_engine_directory(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding an engine manifest (a finished export)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (engine files reach several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_directory(engine_dir: str | os.PathLike) -> dict[str, FileEntry]:
    """``{relative path: FileEntry}`` of every file under ``engine_dir`` but the manifest and
    temporary files, in sorted order (what the manifest lists)."""
    root = Path(engine_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.endswith(".tmp"))
    return {p.relative_to(root).as_posix(): FileEntry(file_sha256(p), p.stat().st_size) for p in files}


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` (or ``"1.2.3.dev0"``, ``"2.0.0rc1"``, ``"1.2"``) -> ``(1, 2, 3)``: leading digits only."""
    parts = []
    for piece in str(version).split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() < len(piece):  # "0rc1": a pre-release suffix ends the numeric part
            break
    if not parts:
        raise EngineError(f"unreadable version {version!r} in the engine manifest; {_REEXPORT}")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def check_sdk_compatible(written: str, running: str = __version__) -> None:
    """Refuse engines from a newer SDK or from another release series.

    Rules (semantic versioning): the writer must not be newer than the reader, and both must
    share the major version (for ``0.x``, the minor version too: 0.x releases may break).

    Raises:
        EngineError: the versions are incompatible.
    """
    w, r = parse_version(written), parse_version(running)
    if w > r:
        raise EngineError(
            f"the engine was written by sd4match-sdk {written}, newer than this SDK ({running}); "
            f"upgrade sd4match-sdk to {written} or newer, or {_REEXPORT}"
        )
    same_series = w[0] == r[0] and (r[0] > 0 or w[1] == r[1])
    if not same_series:
        raise EngineError(
            f"the engine was written by sd4match-sdk {written}, whose engine format this SDK ({running}) "
            f"does not read; {_REEXPORT}"
        )


def read_manifest(engine_dir: str | os.PathLike) -> EngineManifest:
    """Read and check ``manifest.json`` (format marker, format version, SDK version).

    File hashes are checked separately by :func:`verify_files`.

    Raises:
        EngineError: missing or unreadable manifest, unknown format version, incompatible SDK.
    """
    path = Path(engine_dir) / MANIFEST_FILE
    if not path.is_file():
        raise EngineError(
            f"{str(path)!r} not found: {str(engine_dir)!r} is not an engine directory (or the export did not finish)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EngineError(f"cannot read {str(path)!r} ({err}); {_REEXPORT}") from None
    marker = data.get("format") if isinstance(data, dict) else None
    if marker != ENGINE_FORMAT:
        raise EngineError(f"{str(path)!r} is not an sd4match engine manifest (format={marker!r})")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EngineError(
            f"{str(path)!r} has engine format version {version!r}; this SDK ({__version__}) reads version "
            f"{FORMAT_VERSION}. Use the SDK that wrote it, or {_REEXPORT}"
        )
    check_sdk_compatible(str(data.get("sdk_version", "")))
    try:
        return EngineManifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise EngineError(
            f"{str(path)!r} is incomplete or malformed ({type(err).__name__}: {err}); {_REEXPORT}"
        ) from None


def write_manifest(engine_dir: str | os.PathLike, manifest: EngineManifest) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename): it marks a finished export."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST_FILE
    fd, tmp = tempfile.mkstemp(prefix=MANIFEST_FILE, suffix=".tmp", dir=engine_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest.to_dict(), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the manifest is read by other users/tools
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def verify_files(engine_dir: str | os.PathLike, manifest: EngineManifest, names: list[str] | None = None) -> None:
    """Check that files exist with the manifest's size and sha256.

    Args:
        engine_dir: the engine directory.
        manifest: its manifest.
        names: the files to check (default: every file the manifest lists).

    Raises:
        EngineError: a file is missing, not listed in the manifest, or differs from it.
    """
    engine_dir = Path(engine_dir)
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files.get(name)
        path = engine_dir / name
        if entry is None:
            raise EngineError(f"{name!r} is used by the engine but not listed in its manifest; {_REEXPORT}")
        if not path.is_file():
            raise EngineError(f"engine file {str(path)!r} is missing; copy the whole engine directory or {_REEXPORT}")
        size = path.stat().st_size
        if size != entry.bytes:
            found = f"{size} bytes, the manifest says {entry.bytes}"
        else:
            digest = file_sha256(path)
            if digest == entry.sha256:
                continue
            found = f"sha256 {digest}, the manifest says {entry.sha256}"
        raise EngineError(
            f"engine file {str(path)!r} differs from its manifest ({found}): it was modified, truncated "
            f"or belongs to another export. Rebuild the engine directory: {_REEXPORT}"
        )


def check_plan_compatibility(info: TensorRTInfo | None, compute_capability: str, trt_version: str) -> None:
    """Refuse plans built for another GPU architecture or TensorRT version.

    Args:
        info: the manifest's ``tensorrt`` section.
        compute_capability: ``"major.minor"`` of the GPU that would run the plans.
        trt_version: the installed ``tensorrt.__version__``.

    Raises:
        EngineError: the plans cannot run here; the message says how to rebuild them.
    """
    rebuild = (
        "rebuild the plans on this machine: sd4match-export --engine trt ... (or run the directory's "
        "ONNX graphs with Matcher.from_pretrained(DIR, engine_runtime='onnxruntime'))"
    )
    if info is None:
        raise EngineError(f"the manifest lists TensorRT plans but no 'tensorrt' section (GPU, version); {rebuild}")
    if info.compute_capability != compute_capability:
        raise EngineError(
            f"the TensorRT plans were built for a GPU of compute capability {info.compute_capability} "
            f"({info.device_name or 'unknown GPU'}); this GPU has compute capability {compute_capability}. "
            f"Plans are specific to the GPU architecture: {rebuild}"
        )
    if info.version != trt_version:
        raise EngineError(
            f"the TensorRT plans were built with TensorRT {info.version}; this machine has TensorRT "
            f"{trt_version}, which cannot load them: {rebuild}"
        )
