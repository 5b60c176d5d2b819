"""A downloaded zip archive: its record (size + sha256), its integrity, and a safe extraction.

* The first download records the archive's size and sha256 (``<archive>.json``); every later
  download and every later check must match that record, so an archive that changed on the
  server (a re-release, a compromised mirror) is refused instead of silently used.
* Extraction refuses the whole archive if any member could land outside the target directory
  (an absolute path, a drive letter, a ``..`` component) or is a symbolic link, and refuses
  archives that unpack to more than :data:`MAX_UNPACKED_BYTES`. It writes into a temporary
  directory next to the target and renames it into place, so a kill never leaves half a tree
  (docs/design.md §12.5).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from ..atomic import write_text
from ..errors import DownloadError

__all__ = [
    "MAX_UNPACKED_BYTES",
    "ArchiveRecord",
    "check_record",
    "extract_members",
    "file_sha256",
    "open_zip",
    "read_record",
    "unsafe_member",
    "write_record",
]

#: Refuse archives that unpack to more than this (the official prompts are tens of MB).
MAX_UNPACKED_BYTES = 4 << 30


@dataclass(frozen=True)
class ArchiveRecord:
    """What the first download of an archive looked like.

    Attributes:
        url: where it came from.
        size: bytes.
        sha256: hex digest.
        recorded: when (UTC, ISO 8601).
    """

    url: str
    size: int
    sha256: str
    recorded: str = ""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_record(path: Path) -> ArchiveRecord | None:
    """The record at ``path`` (``None`` if there is none).

    Raises:
        DownloadError: the record is unreadable.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return ArchiveRecord(str(data["url"]), int(data["size"]), str(data["sha256"]), str(data.get("recorded", "")))
    except (ValueError, KeyError, TypeError) as err:
        raise DownloadError(f"{path} is not a readable archive record ({err}); delete it to record the archive anew") from None


def write_record(path: Path, url: str, archive: Path) -> ArchiveRecord:
    """Record ``archive``'s size and sha256 (atomically)."""
    recorded = datetime.now(UTC).isoformat(timespec="seconds")
    record = ArchiveRecord(url, archive.stat().st_size, file_sha256(archive), recorded)
    write_text(path, json.dumps(asdict(record), indent=2) + "\n")
    return record


def check_record(record: ArchiveRecord, archive: Path, record_path: Path) -> None:
    """Refuse ``archive`` unless its size and sha256 are the recorded ones.

    Raises:
        DownloadError: naming both digests, the record and how to accept a new release.
    """
    size, digest = archive.stat().st_size, file_sha256(archive)
    if size != record.size or digest != record.sha256:
        raise DownloadError(
            f"the archive differs from the one recorded at its first download: now {size} bytes, sha256 {digest}; "
            f"recorded {record.size} bytes, sha256 {record.sha256} (from {record.url}, {record.recorded}, in "
            f"{record_path}). Refusing it. If the authors really re-released it, delete {record_path} and run again"
        )


def open_zip(path: Path) -> zipfile.ZipFile:
    """The archive, after a CRC check of every member.

    Raises:
        DownloadError: not a zip file, or a damaged one.
    """
    try:
        archive = zipfile.ZipFile(path)
        damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DownloadError(f"{path} is not a readable zip archive ({err}); delete it and download again") from None
    if damaged is not None:
        archive.close()
        raise DownloadError(f"{path} is damaged (member {damaged!r} fails its CRC check); delete it and download again")
    return archive


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why extracting ``info`` is unsafe (``None`` when it is safe)."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def _checked_members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    """Every member, after refusing unsafe ones and archives too large to unpack."""
    members = archive.infolist()
    for info in members:
        reason = unsafe_member(info)
        if reason is not None:
            raise DownloadError(f"{source}: member {info.filename!r} is {reason}; refusing to extract the archive")
    unpacked = sum(info.file_size for info in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise DownloadError(f"{source} unpacks to {unpacked} bytes (more than {MAX_UNPACKED_BYTES}); refusing it")
    return members


def extract_members(archive: zipfile.ZipFile, source: Path, prefix: str, target: Path) -> Path:
    """Extract the members under ``prefix`` (stripped) into ``target``, replacing it atomically.

    Args:
        archive: the opened archive.
        source: its path (for messages).
        prefix: ``"top/"`` to strip a top-level folder, ``""`` for none.
        target: the directory to create (an old one is replaced).

    Raises:
        DownloadError: an unsafe member anywhere in the archive (nothing is extracted then).
    """
    members = _checked_members(archive, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        for info in members:
            name = info.filename.replace("\\", "/")
            if info.is_dir() or not name.startswith(prefix) or name.startswith("__MACOSX/"):
                continue
            dest = staging / name[len(prefix) :]
            if not dest.resolve().is_relative_to(staging.resolve()):
                raise DownloadError(f"{source}: member {info.filename!r} resolves outside the target; refusing it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
