"""The archive record (size + sha256), integrity checks and safe extraction (docs/design.md §12.5)."""

from __future__ import annotations

import zipfile

import pytest
from prompt_archives import build_zip

from sd4match_sdk.downloads.archive import (
    check_record,
    extract_members,
    file_sha256,
    open_zip,
    read_record,
    unsafe_member,
    write_record,
)
from sd4match_sdk.errors import DownloadError


def test_record_round_trip_and_refusal(tmp_path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(build_zip({"x.txt": b"one"}))
    record = write_record(tmp_path / "a.json", "http://example/a.zip", archive)
    assert read_record(tmp_path / "a.json") == record and record.sha256 == file_sha256(archive)
    check_record(record, archive, tmp_path / "a.json")  # unchanged: accepted
    archive.write_bytes(build_zip({"x.txt": b"two"}))
    with pytest.raises(DownloadError, match=f"recorded {record.size} bytes, sha256 {record.sha256}"):
        check_record(record, archive, tmp_path / "a.json")


def test_an_unreadable_record_says_how_to_recover(tmp_path) -> None:
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(DownloadError, match="delete it"):
        read_record(tmp_path / "a.json")


@pytest.mark.parametrize(
    "name, reason",
    [("../evil.txt", "'..'"), ("prompts/../../evil.txt", "'..'"), ("/etc/evil", "absolute"), ("C:/evil", "absolute"),
     ("..\\evil.txt", "'..'")],
)  # fmt: skip
def test_members_escaping_the_target_are_unsafe(name, reason) -> None:
    assert reason in unsafe_member(zipfile.ZipInfo(name))


def test_extraction_refuses_the_whole_archive(tmp_path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(build_zip({"ok/caption.pt": b"x", "../evil.txt": b"x"}))
    with open_zip(path) as archive, pytest.raises(DownloadError, match="'../evil.txt' is a '..' component"):
        extract_members(archive, path, "", tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "target").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not list((tmp_path / "out").glob("*.tmp"))  # the staging directory is gone


def test_symbolic_links_are_refused(tmp_path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(build_zip({"ok/caption.pt": b"x"}, symlinks={"ok/link": "/etc/passwd"}))
    with open_zip(path) as archive, pytest.raises(DownloadError, match="symbolic link"):
        extract_members(archive, path, "", tmp_path / "target")


def test_extraction_strips_the_prefix_and_replaces_the_target(tmp_path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(build_zip({"top/a/caption.pt": b"new", "__MACOSX/top/._a": b"junk", "other.txt": b"x"}))
    target = tmp_path / "target"
    (target / "old").mkdir(parents=True)
    with open_zip(path) as archive:
        extract_members(archive, path, "top/", target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["a", "a/caption.pt"]


def test_damaged_archives_are_refused(tmp_path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DownloadError, match="not a readable zip archive"):
        open_zip(path)
    data = bytearray(build_zip({"a/caption.pt": b"x" * 1000}, ))
    data[40] ^= 0xFF  # inside the member's compressed data
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="damaged|not a readable"):
        open_zip(path)
