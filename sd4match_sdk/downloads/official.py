"""The authors' released prompts: ``sd4match download prompts`` and names like ``official:single_spair``.

The archive's address is the official README's (docs/design.md §12.1); ``$SD4MATCH_PROMPTS_URL``
replaces it (a mirror, a site without outside access). Its directory names follow the official
naming code (docs/design.md §11.1, §11.2): ``<Kind>_<dataset>_sd2-1_<config>/`` holding
``caption.pt`` (Single, Class) or ``ckpt.pt`` (CPM). **The archive's content was not verified**
(nobody working on the SDK could download it), so the layout check is strict and its errors say
what was found and what was expected (docs/design.md §12.5).

Cache layout (``$SD4MATCH_CACHE/prompts/``): ``pretrained_prompts.zip`` (kept, checked against its
record), ``pretrained_prompts.zip.part`` (an interrupted download), ``pretrained_prompts.json``
(size and sha256 of the first download), ``official/<directory>/<file>`` (the extracted prompts).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DownloadError, PromptError
from .archive import ArchiveRecord, check_record, extract_members, open_zip, read_record, write_record
from .cache import cache_dir
from .http import fetch_resumable

__all__ = [
    "EXPECTED_PROMPTS",
    "OFFICIAL_PREFIX",
    "PROMPTS_URL",
    "PROMPTS_URL_ENV",
    "OfficialPrompt",
    "PromptArchive",
    "download_prompts",
    "official_prompts",
    "prompt_layout",
    "resolve_official_prompt",
]

#: The released prompt archive (official: README.md:103-122; docs/design.md §12.1).
PROMPTS_URL = "https://www.robots.ox.ac.uk/~xinghui/sd4match/pretrained_prompts.zip"
#: Environment variable that replaces :data:`PROMPTS_URL`.
PROMPTS_URL_ENV = "SD4MATCH_PROMPTS_URL"
#: ``prompt="official:<name>"`` names an extracted official prompt.
OFFICIAL_PREFIX = "official:"
#: The prompts the archive must hold (the paper's Table 2 rows); PF-Pascal ones are taken when present.
EXPECTED_PROMPTS = {
    "single_spair": "Single_spair_sd2-1_TokenEmbeds75/caption.pt",
    "class_spair": "Class_spair_sd2-1_TokenEmbeds75/caption.pt",
    "cpm_spair": "CPM_spair_sd2-1_Pair-DINO-Feat-G25-C50/ckpt.pt",
}
_DIRECTORY = re.compile(r"(Single|Class|CPM)_([A-Za-z0-9-]+)_sd2-1_([^/]+)")
_FILE_OF_KIND = {"Single": "caption.pt", "Class": "caption.pt", "CPM": "ckpt.pt"}
_ARCHIVE = "pretrained_prompts.zip"


@dataclass(frozen=True)
class OfficialPrompt:
    """One extracted official prompt.

    Attributes:
        name: ``single_spair``, ``class_pfpascal``, ... (``prompt="official:<name>"``).
        kind: ``single``, ``class`` or ``cpm``.
        dataset: the dataset it was tuned on (``spair``, ``pfpascal``).
        directory: the archive's directory name (``Single_spair_sd2-1_TokenEmbeds75``).
        path: the prompt file.
    """

    name: str
    kind: str
    dataset: str
    directory: str
    path: Path


@dataclass(frozen=True)
class PromptArchive:
    """The result of :func:`download_prompts`: where the prompts are and what the archive was."""

    url: str
    archive: Path
    record: ArchiveRecord
    directory: Path
    prompts: dict[str, OfficialPrompt] = field(default_factory=dict)


def _prompt_in(parts: list[str]) -> tuple[int, re.Match] | None:
    """``(index, match)`` of a ``<Kind>_<ds>_sd2-1_<config>/<file>`` tail of a member path."""
    if len(parts) < 2:
        return None
    found = _DIRECTORY.fullmatch(parts[-2])
    if found is None or parts[-1] != _FILE_OF_KIND[found.group(1)]:
        return None
    return len(parts) - 2, found


def _name_for(found: re.Match, taken: set[str]) -> str:
    name = f"{found.group(1).lower()}_{found.group(2).lower()}"
    return name if name not in taken else f"{name}_{found.group(3).lower()}"


def prompt_layout(members: list[str]) -> tuple[str, dict[str, str]]:
    """Check an archive's member list: ``(prefix, {name: path under the prefix})``.

    The prompts may sit under one top-level folder (``prefix``, stripped on extraction); they must
    all sit at the same depth, and the three SPair-71k prompts of :data:`EXPECTED_PROMPTS` must be there.

    Raises:
        DownloadError: naming what was found and what was expected.
    """
    prompts: dict[str, str] = {}
    prefixes: set[str] = set()
    for member in sorted(m.replace("\\", "/") for m in members):
        parts = member.split("/")
        located = None if parts[0] == "__MACOSX" else _prompt_in(parts)
        if located is None:
            continue
        index, found = located
        prefixes.add("".join(p + "/" for p in parts[:index]))
        prompts[_name_for(found, set(prompts))] = "/".join(parts[index:])
    missing = [path for name, path in EXPECTED_PROMPTS.items() if prompts.get(name) != path]
    if missing or len(prefixes) > 1:
        shown = sorted({m.replace("\\", "/").rstrip("/") for m in members if not m.startswith("__MACOSX")})
        listing = ", ".join(shown[:25]) + (f" ... ({len(shown)} entries)" if len(shown) > 25 else "")
        problem = f"lacks {', '.join(missing)}" if missing else f"has prompts under several folders ({', '.join(sorted(prefixes))})"
        raise DownloadError(
            f"the prompt archive does not have the expected layout: it {problem}. Expected "
            f"{', '.join(EXPECTED_PROMPTS.values())} (PF-Pascal equivalents optional), optionally under one "
            f"top-level folder; found: {listing or 'nothing'}. The SDK reads the layout of docs/design.md §12.1; "
            f"if the authors changed it, point $SD4MATCH_PROMPTS_URL at an archive in that layout or pass the "
            "prompt files by path"
        )
    return (prefixes.pop() if prefixes else ""), prompts


def official_prompts(directory: Path) -> dict[str, OfficialPrompt]:
    """The prompts extracted in ``directory`` (empty when it does not exist)."""
    if not directory.is_dir():
        return {}
    prompts: dict[str, OfficialPrompt] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        found = _DIRECTORY.fullmatch(sub.name)
        if found is None or not (sub / _FILE_OF_KIND[found.group(1)]).is_file():
            continue
        name = _name_for(found, set(prompts))
        kind, dataset = found.group(1).lower(), found.group(2).lower()
        prompts[name] = OfficialPrompt(name, kind, dataset, sub.name, sub / _FILE_OF_KIND[found.group(1)])
    return prompts


def _prompts_root(cache: Path | None) -> Path:
    return (cache or cache_dir()) / "prompts"


def resolve_official_prompt(name: str, cache: Path | None = None) -> OfficialPrompt:
    """The extracted prompt ``official:<name>`` (the prefix is optional).

    Raises:
        PromptError: not downloaded yet (naming the command that fetches it), or an unknown name
        (listing the known ones).
    """
    short = name.removeprefix(OFFICIAL_PREFIX).strip().lower()
    directory = _prompts_root(cache) / "official"
    available = official_prompts(directory)
    if not available:
        raise PromptError(
            f"the official prompts are not downloaded yet ({OFFICIAL_PREFIX}{short} asked for): run "
            f"`sd4match download prompts` (the authors' archive, into {directory})"
        )
    if short not in available:
        known = ", ".join(OFFICIAL_PREFIX + n for n in sorted(available))
        raise PromptError(f"unknown official prompt {OFFICIAL_PREFIX}{short!s}; the downloaded archive holds: {known}")
    return available[short]


def download_prompts(cache: Path | None = None, progress: bool = True, force: bool = False) -> PromptArchive:
    """Download, check and extract the authors' prompt archive (once; later calls check it).

    Args:
        cache: the SDK cache (``$SD4MATCH_CACHE`` or the user's cache directory when ``None``).
        progress: show a progress bar.
        force: download and extract again (the new archive must still match the record).

    Raises:
        DownloadError: the server failed (rerun to resume), the archive changed since its first
        download, is damaged, has another layout, or holds a member that would escape the target.
    """
    # 1. Where everything goes, and what the first download recorded
    root = _prompts_root(cache)
    archive, part, record_path = root / _ARCHIVE, root / (_ARCHIVE + ".part"), root / "pretrained_prompts.json"
    directory = root / "official"
    url = os.environ.get(PROMPTS_URL_ENV) or PROMPTS_URL
    record = read_record(record_path)
    # 2. Download unless the kept archive is there (resuming an interrupted download)
    if force or not archive.is_file():
        if force:
            part.unlink(missing_ok=True)
        fetch_resumable(url, part, progress)
        _check_and_extract(part, record, record_path, directory, discard=True)
        os.replace(part, archive)
    # 3. Check the kept archive against its record; extract it if the prompts are missing
    elif record is not None:
        check_record(record, archive, record_path)
    if not official_prompts(directory):
        _check_and_extract(archive, record, record_path, directory, discard=False)
    # 4. Record the first download
    if record is None:
        record = write_record(record_path, url, archive)
    return PromptArchive(url, archive, record, directory, official_prompts(directory))


def _check_and_extract(path: Path, record: ArchiveRecord | None, record_path: Path, directory: Path, discard: bool) -> None:
    """Record check, zip check, layout check and safe extraction of ``path``; a fresh download
    that fails a check is deleted (``discard``), so the next run fetches it again."""
    try:
        if record is not None:
            check_record(record, path, record_path)
        with open_zip(path) as zipped:
            prefix, _ = prompt_layout([info.filename for info in zipped.infolist()])
            extract_members(zipped, path, prefix, directory)
    except DownloadError:
        if discard:
            path.unlink(missing_ok=True)
        raise
