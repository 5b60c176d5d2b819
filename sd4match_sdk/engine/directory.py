"""An engine directory on disk: reading and writing its manifest, and the checks made before it runs.

The manifest is written last by the exporter, so a directory without one is an unfinished
export. An engine directory is treated as files from someone else (docs/design.md §13.15):
the manifest is checked field by field (:mod:`.schema`), every path it names is resolved
inside the directory before anything is read (:func:`resolve_engine_file`, with the symlink
policy), and every file that will be loaded must be listed with its size and sha256. Readers
refuse, with an :class:`~sd4match_sdk.errors.EngineError` that says what to rebuild: an unknown
format version, a manifest written by a newer or incompatible SDK, a malformed manifest, a file
outside the directory or whose sha256 differs from the manifest, and TensorRT plans built for
another GPU or TensorRT version. Standard library only, so the checks cost nothing beyond hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .._version import __version__
from ..atomic import TEMP_SUFFIX, write_json
from ..errors import EngineError
from .format import DINO_PROCESSOR_DIR, ENGINE_FORMAT, FORMAT_VERSION, MANIFEST_FILE, GraphName, onnx_file, plan_file
from .manifest import EngineManifest, FileEntry, TensorRTInfo
from .schema import check_relative_path

__all__ = [
    "MAX_MANIFEST_BYTES",
    "check_not_unfinished_engine",
    "check_plan_compatibility",
    "check_sdk_compatible",
    "file_sha256",
    "hash_directory",
    "hash_files",
    "is_engine_directory",
    "is_unfinished_engine",
    "parse_version",
    "read_manifest",
    "resolve_engine_file",
    "verify_files",
    "write_manifest",
]

_REEXPORT = "re-export it with this SDK: sd4match-export --model ... --prompt ... --out DIR"


def is_engine_directory(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding an engine manifest (a finished export)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def is_unfinished_engine(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory with engine files but no manifest: an export that did not finish."""
    path = Path(path)
    if not path.is_dir() or is_engine_directory(path):
        return False
    names = {onnx_file(g) for g in GraphName} | {plan_file(g) for g in GraphName} | {DINO_PROCESSOR_DIR}
    return any((path / name).exists() for name in names)


def check_not_unfinished_engine(path: str | os.PathLike) -> None:
    """Refuse a directory that an export started but did not finish (it has no manifest).

    Raises:
        EngineError: ``path`` holds engine files but no ``manifest.json``.
    """
    if is_unfinished_engine(path):
        raise EngineError(
            f"{str(path)!r} holds no complete engine: it has engine files but no {MANIFEST_FILE} (the export was "
            f"killed or failed); export it again: sd4match-export --out {path} --overwrite ..."
        )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (engine files reach several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_files(engine_dir: str | os.PathLike, names: list[str]) -> dict[str, FileEntry]:
    """``{relative path: FileEntry}`` of the files ``names`` of ``engine_dir``, sorted (what the
    manifest lists: the exporter hashes only the files it wrote)."""
    root = Path(engine_dir)
    return {name: FileEntry(file_sha256(root / name), (root / name).stat().st_size) for name in sorted(set(names))}


def hash_directory(engine_dir: str | os.PathLike) -> dict[str, FileEntry]:
    """``{relative path: FileEntry}`` of every file under ``engine_dir`` but the manifest and
    temporary files, in sorted order."""
    root = Path(engine_dir)
    files = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.endswith(TEMP_SUFFIX)]
    return hash_files(root, [p.relative_to(root).as_posix() for p in files])


def _hub_blobs(root: Path) -> Path | None:
    """``<repo>/blobs`` when ``root`` lies in a Hugging Face hub cache snapshot (``<repo>/snapshots/<rev>/...``)."""
    for folder in (root, *root.parents):
        if folder.parent.name == "snapshots":
            return folder.parent.parent / "blobs"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def resolve_engine_file(engine_dir: str | os.PathLike, name: str) -> Path:
    """The path of the engine file ``name``, after checking where it leads, before it is read.

    Symlink policy (docs/design.md §13.15): ``name`` must be a relative path without ``..``
    (:func:`.schema.check_relative_path`); every folder on the way must resolve inside the
    engine directory; the file must be a regular file or a symlink to one, whose target lies
    inside the engine directory or, for an engine in a Hugging Face hub cache
    (``<repo>/snapshots/<revision>/``), in that repository's ``blobs/`` folder.

    Raises:
        EngineError: the path leaves the directory, the file is missing, or it is not a
            regular file (a folder, a device, a FIFO, a symlink elsewhere).
    """
    engine_dir = Path(engine_dir)
    try:
        check_relative_path(name)
    except EngineError as err:
        raise EngineError(f"{str(engine_dir / MANIFEST_FILE)!r}: {err}") from None
    root, path = Path(os.path.realpath(engine_dir)), engine_dir / name
    if not _inside(Path(os.path.realpath(path.parent)), root):
        raise EngineError(
            f"engine file {str(path)!r} lies in a folder that resolves outside the engine directory {str(root)!r}; "
            "an engine's folders must not be symlinks that leave it: copy the engine as plain files"
        )
    if not os.path.lexists(path):
        raise EngineError(f"engine file {str(path)!r} is missing; copy the whole engine directory or {_REEXPORT}")
    target = Path(os.path.realpath(path))
    blobs = _hub_blobs(root)
    if not (_inside(target, root) or (blobs is not None and _inside(target, Path(os.path.realpath(blobs))))):
        raise EngineError(
            f"engine file {str(path)!r} is a symlink to {str(target)!r}, outside the engine directory (and not in a "
            "hub cache's blobs/); an engine may only link inside itself: copy the engine as plain files"
        )
    if not target.is_file():
        raise EngineError(f"engine file {str(path)!r} is not a regular file; copy the whole engine directory or {_REEXPORT}")
    return path


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


#: A manifest is a few KB (the full SD 2.1 engine's is under 20 KB); a larger file is not read.
MAX_MANIFEST_BYTES = 1 << 24


def read_manifest(engine_dir: str | os.PathLike) -> EngineManifest:
    """Read and check ``manifest.json`` (format marker, format version, SDK version, every field).

    File hashes are checked separately by :func:`verify_files`.

    Raises:
        EngineError: missing, oversized or unreadable manifest, unknown format version,
            incompatible SDK, or a field of the wrong type or range.
    """
    path = Path(engine_dir) / MANIFEST_FILE
    if not path.is_file():
        unfinished = " (it holds engine files: the export did not finish)" if is_unfinished_engine(engine_dir) else ""
        raise EngineError(
            f"{str(engine_dir)!r} holds no complete engine: {MANIFEST_FILE} is missing{unfinished}; {_REEXPORT}"
        )
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise EngineError(f"{str(path)!r} is {path.stat().st_size} bytes, too large for an engine manifest; {_REEXPORT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EngineError(f"cannot read {str(path)!r} ({err}); {_REEXPORT}") from None
    marker = data.get("format") if isinstance(data, dict) else None
    if marker != ENGINE_FORMAT:
        raise EngineError(f"{str(path)!r} is not an sd4match engine manifest (format={marker!r}); {_REEXPORT}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EngineError(
            f"{str(path)!r} has engine format version {version!r}; this SDK ({__version__}) reads version "
            f"{FORMAT_VERSION}. Use the SDK that wrote it, or {_REEXPORT}"
        )
    check_sdk_compatible(str(data.get("sdk_version", "")))
    try:
        return EngineManifest.from_dict(data)
    except EngineError as err:
        raise EngineError(f"{str(path)!r}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise EngineError(
            f"{str(path)!r} is incomplete or malformed ({type(err).__name__}: {err}); {_REEXPORT}"
        ) from None


def write_manifest(engine_dir: str | os.PathLike, manifest: EngineManifest) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename): it marks a finished export."""
    return write_json(Path(engine_dir) / MANIFEST_FILE, manifest.to_dict())


def verify_files(engine_dir: str | os.PathLike, manifest: EngineManifest, names: list[str] | None = None) -> None:
    """Check that files lie inside the directory (:func:`resolve_engine_file`) with the
    manifest's size and sha256, before any of them is loaded.

    Args:
        engine_dir: the engine directory.
        manifest: its manifest.
        names: the files to check (default: every file the manifest lists).

    Raises:
        EngineError: a file is missing, outside the directory, not listed in the manifest, or
            differs from it.
    """
    engine_dir = Path(engine_dir)
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files.get(name)
        if entry is None:
            raise EngineError(f"{name!r} is used by the engine but not listed in its manifest, so it cannot be verified; {_REEXPORT}")
        path = resolve_engine_file(engine_dir, name)
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
