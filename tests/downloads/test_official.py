"""``sd4match download prompts`` against a real HTTP server on 127.0.0.1, and ``official:NAME`` prompts.

The authors' archive could not be downloaded while the SDK was written, so these tests serve
archives built here in the layout docs/design.md §12.1 describes, and altered ones: the layout
check must name what it found and what it expected.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from prompt_archives import CLASS, CPM, SINGLE, build_zip

from sd4match_sdk import Matcher, PromptError
from sd4match_sdk.data import SPAIR_CATEGORIES
from sd4match_sdk.downloads import download_prompts, resolve_official_prompt
from sd4match_sdk.downloads.official import prompt_layout
from sd4match_sdk.errors import DownloadError
from sd4match_sdk.prompts import PromptKind, load_prompt


def _serve(server, prompt_files, prefix="pretrained_prompts/", extra=None) -> bytes:
    server.content = build_zip({prefix + k: v for k, v in {**prompt_files, **(extra or {})}.items()})
    return server.content


def test_full_download_extracts_and_records(server, cache, prompt_files) -> None:
    content = _serve(server, prompt_files, extra={"Single_pfpascal_sd2-1_TokenEmbeds75/caption.pt": prompt_files[f"{SINGLE}/caption.pt"]})
    archive = download_prompts(progress=False)
    assert sorted(archive.prompts) == ["class_spair", "cpm_spair", "single_pfpascal", "single_spair"]
    record = json.loads((cache / "prompts" / "pretrained_prompts.json").read_text())
    import hashlib

    assert record["sha256"] == hashlib.sha256(content).hexdigest() and record["size"] == len(content)
    assert record["url"] == server.url
    assert (cache / "prompts" / "official" / SINGLE / "caption.pt").is_file()  # the top-level folder is stripped
    # a second call downloads nothing: it checks the kept archive against the record
    download_prompts(progress=False)
    assert server.ranges == [None]


def test_official_names_load_everywhere(server, cache, prompt_files, tiny_sd) -> None:
    _serve(server, prompt_files, prefix="")  # no top-level folder: fine too
    download_prompts(progress=False)
    single, per_class, cpm = (load_prompt(f"official:{n}") for n in ("single_spair", "class_spair", "cpm_spair"))
    assert (single.kind, per_class.kind, cpm.kind) == (PromptKind.SINGLE, PromptKind.CLASS, PromptKind.CPM)
    assert per_class.categories == sorted(SPAIR_CATEGORIES)
    assert single.metadata["name"] == "official:single_spair" and single.metadata["dataset"] == "spair"
    matcher = Matcher.from_pretrained(str(tiny_sd), prompt="official:single_spair", image_size=256, ensemble=1)
    result = matcher.match(np.zeros((40, 50, 3), np.uint8), np.zeros((30, 20, 3), np.uint8), [[10, 10]], seed=0)
    assert matcher.prompt_kind is PromptKind.SINGLE and result.points.shape == (1, 2)


def test_unknown_names_list_the_known_ones(server, cache, prompt_files) -> None:
    with pytest.raises(PromptError, match="run `sd4match download prompts`"):
        load_prompt("official:single_spair")
    _serve(server, prompt_files)
    download_prompts(progress=False)
    with pytest.raises(PromptError, match="official:class_spair, official:cpm_spair, official:single_spair"):
        resolve_official_prompt("official:single_pfpascal")


def test_interrupted_download_resumes(server, cache, prompt_files) -> None:
    content = _serve(server, prompt_files)
    server.cut_after = len(content) // 3
    with pytest.raises(DownloadError, match="resume"):
        download_prompts(progress=False)
    part = cache / "prompts" / "pretrained_prompts.zip.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(content) // 3
    archive = download_prompts(progress=False)
    assert server.ranges == [None, f"bytes={kept}-"]
    assert archive.archive.read_bytes() == content and not part.exists() and "single_spair" in archive.prompts


def test_a_corrupt_archive_is_refused_and_fetched_again(server, cache, prompt_files) -> None:
    server.content = b"PK\x03\x04 but not really a zip archive"
    with pytest.raises(DownloadError, match="not a readable zip archive"):
        download_prompts(progress=False)
    assert not (cache / "prompts" / "pretrained_prompts.json").exists()
    assert not (cache / "prompts" / "pretrained_prompts.zip.part").exists()  # not resumed: fetched anew
    _serve(server, prompt_files)
    assert "cpm_spair" in download_prompts(progress=False).prompts


@pytest.mark.parametrize("evil", ["../evil.txt", "pretrained_prompts/../../evil.txt", "/tmp/sd4match-evil.txt"])
def test_a_member_escaping_the_target_is_refused(server, cache, prompt_files, tmp_path, evil) -> None:
    server.content = build_zip({**{f"pretrained_prompts/{k}": v for k, v in prompt_files.items()}, evil: b"owned"})
    with pytest.raises(DownloadError, match="refusing to extract"):
        download_prompts(progress=False)
    assert not (cache / "prompts" / "official").exists() and not (cache / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_a_symlink_member_is_refused(server, cache, prompt_files) -> None:
    server.content = build_zip({f"p/{k}": v for k, v in prompt_files.items()}, symlinks={f"p/{SINGLE}/link": "/etc"})
    with pytest.raises(DownloadError, match="symbolic link"):
        download_prompts(progress=False)


def test_a_changed_archive_is_refused_with_the_recorded_sha256(server, cache, prompt_files) -> None:
    _serve(server, prompt_files)
    first = download_prompts(progress=False)
    changed = dict(prompt_files)
    changed[f"{SINGLE}/caption.pt"] = prompt_files[f"{CLASS}/caption.pt"]
    _serve(server, changed)
    with pytest.raises(DownloadError, match=f"recorded {first.record.size} bytes, sha256 {first.record.sha256}"):
        download_prompts(progress=False, force=True)
    assert load_prompt("official:single_spair").kind is PromptKind.SINGLE  # the first download is still in use
    # the kept archive is checked too: tampering with it on disk is refused
    first.archive.write_bytes(server.content)
    with pytest.raises(DownloadError, match="differs from the one recorded"):
        download_prompts(progress=False)


def test_layouts_that_differ_name_what_was_found_and_expected(prompt_files) -> None:
    names = [f"top/{k}" for k in prompt_files]
    assert prompt_layout(names)[0] == "top/"
    without_class = [n for n in names if CLASS not in n]
    with pytest.raises(DownloadError, match=rf"lacks {CLASS}/caption.pt.*found: top/{CPM}/ckpt.pt, top/{SINGLE}/caption.pt"):
        prompt_layout(without_class)
    renamed = [n.replace("caption.pt", "prompt.pt") for n in names]
    with pytest.raises(DownloadError, match=f"lacks {SINGLE}/caption.pt, {CLASS}/caption.pt.*prompt.pt"):
        prompt_layout(renamed)
    mixed = [names[0], names[1].replace("top/", "other/"), names[2]]
    with pytest.raises(DownloadError, match="several folders"):
        prompt_layout(mixed)
    with pytest.raises(DownloadError, match="found: nothing"):
        prompt_layout([])


def test_a_download_in_another_layout_is_refused(server, cache, prompt_files) -> None:
    server.content = build_zip({k.replace("sd2-1", "sd1-5"): v for k, v in prompt_files.items()})
    with pytest.raises(DownloadError, match=r"expected layout.*Single_spair_sd1-5_TokenEmbeds75"):
        download_prompts(progress=False)
    assert not (cache / "prompts" / "official").exists()


def test_a_prompt_of_another_kind_than_its_directory_is_refused(server, cache, prompt_files) -> None:
    swapped = dict(prompt_files)
    swapped[f"{SINGLE}/caption.pt"] = prompt_files[f"{CLASS}/caption.pt"]
    _serve(server, swapped)
    download_prompts(progress=False)
    with pytest.raises(PromptError, match="holds a class prompt, but its directory"):
        load_prompt("official:single_spair")


def test_the_exporter_resolves_official_names_first(cache, tmp_path, capsys) -> None:
    from sd4match_sdk.export.cli import main as export_main

    out = tmp_path / "engine"
    assert export_main(["--model", str(tmp_path / "no-model"), "--prompt", "official:cpm_spair", "--out", str(out)]) == 2
    assert "run `sd4match download prompts`" in capsys.readouterr().err and not out.exists()  # before any model loads
