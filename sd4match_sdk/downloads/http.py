"""One file over HTTP(S) with resume: ``requests`` streams it into ``<name>.part``, tqdm shows it.

An interrupted download keeps its ``.part`` file; the next call asks for the rest with an HTTP
``Range`` header and appends when the server answers ``206 Partial Content`` from that offset, or
starts again when the server ignores ranges (``200``) (docs/design.md §12.5).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DownloadError

__all__ = ["fetch_resumable"]

_CHUNK = 1 << 16  # small enough that a dropped connection keeps most of what arrived
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _range_start(header: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes a-b/n`` answer (``None`` if absent or malformed)."""
    found = _CONTENT_RANGE.fullmatch((header or "").strip())
    return int(found.group(1)) if found else None


def _expected_size(response, offset: int) -> int | None:
    """The complete file's size, from ``Content-Range`` (206) or ``Content-Length`` (200)."""
    found = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if found and found.group(3) != "*":
        return int(found.group(3))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def fetch_resumable(url: str, part: Path, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``url`` into ``part``, resuming what an earlier call left there.

    Args:
        url: ``http://`` or ``https://`` address.
        part: the partial file; complete when this returns.
        progress: show a tqdm bar in bytes.
        timeout: seconds to wait for the connection and for each read.

    Raises:
        DownloadError: the server refused, or the connection broke (the ``.part`` file keeps what
        arrived: call again to resume).
    """
    import requests
    from tqdm.auto import tqdm

    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and offset:  # nothing after offset: the file may be complete
                total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
                if total.isdigit() and int(total) == offset:
                    return part
                part.unlink()
                return fetch_resumable(url, part, progress, timeout)
            if response.status_code not in (200, 206):
                raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason}; check the address")
            if response.status_code == 206 and _range_start(response.headers.get("Content-Range")) != offset:
                raise DownloadError(f"{url} resumed at another offset than asked ({offset}); delete {part} and run again")
            if response.status_code == 200:
                offset = 0  # the server ignores ranges: start over
            expected = _expected_size(response, offset)
            with part.open("ab" if offset else "wb") as f, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress, dynamic_ncols=True,
            ) as bar:  # fmt: skip
                for block in response.iter_content(_CHUNK):
                    f.write(block)
                    bar.update(len(block))
    except requests.RequestException as err:
        kept = part.stat().st_size if part.is_file() else 0
        raise DownloadError(
            f"downloading {url} failed after {kept} bytes ({type(err).__name__}: {err}); run the same command "
            "again to resume"
        ) from None
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise DownloadError(f"{url}: got {size} of {expected} bytes; run the same command again to resume")
    return part
