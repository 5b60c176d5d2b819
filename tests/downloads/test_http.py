"""Resumable downloads over real HTTP on 127.0.0.1 (docs/design.md §12.5)."""

from __future__ import annotations

import os

import pytest

from sd4match_sdk.downloads.http import fetch_resumable
from sd4match_sdk.errors import DownloadError

DATA = os.urandom(300_000)


def test_full_download(server, tmp_path) -> None:
    server.content = DATA
    part = fetch_resumable(server.url, tmp_path / "a.zip.part", progress=False)
    assert part.read_bytes() == DATA and server.ranges == [None]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path) -> None:
    server.content, server.cut_after = DATA, 100_000
    part = tmp_path / "a.zip.part"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch_resumable(server.url, part, progress=False)
    kept = part.stat().st_size
    assert 0 < kept < len(DATA)
    fetch_resumable(server.url, part, progress=False)
    assert part.read_bytes() == DATA
    assert server.ranges == [None, f"bytes={kept}-"]


def test_a_server_ignoring_ranges_restarts_the_file(server, tmp_path) -> None:
    server.content, server.cut_after, server.honour_ranges = DATA, 50_000, False
    part = tmp_path / "a.zip.part"
    with pytest.raises(DownloadError):
        fetch_resumable(server.url, part, progress=False)
    fetch_resumable(server.url, part, progress=False)
    assert part.read_bytes() == DATA  # not the first 50 kB twice


def test_a_complete_part_file_is_kept(server, tmp_path) -> None:
    server.content = DATA
    part = tmp_path / "a.zip.part"
    part.write_bytes(DATA)
    fetch_resumable(server.url, part, progress=False)  # 416: nothing after the end
    assert part.read_bytes() == DATA and server.ranges == [f"bytes={len(DATA)}-"]


def test_http_errors_name_the_status(server, tmp_path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_resumable(server.url.replace("pretrained_prompts", "nothing"), tmp_path / "x.part", progress=False)
