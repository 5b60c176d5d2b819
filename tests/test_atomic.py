"""Files the SDK writes are atomic and get normal permissions (docs/design.md §13.17)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from sd4match_sdk.atomic import atomic_path, write_json, write_text
from sd4match_sdk.evaluation.report import write_json as write_report
from sd4match_sdk.prompts import PromptKind, PromptWeights, save_prompt
from sd4match_sdk.training.checkpoint import save_state


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gives_0644_under_umask_022(umask_022, tmp_path):
    single = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.zeros(1, 77, 8)})
    written = [
        save_prompt(tmp_path / "p.safetensors", single),
        save_state(tmp_path / "state.pt", {"step": 1}),
        write_report(tmp_path / "eval.json", {"pck": 1}),
        write_json(tmp_path / "config.json", {"a": 1}),
        write_text(tmp_path / "notes.txt", "x"),
    ]
    assert [mode(p) for p in written] == [0o644] * len(written)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_the_umask_is_respected(tmp_path):
    previous = os.umask(0o077)
    try:
        path = write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert mode(path) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "r.json", {"v": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_parent_folders_are_created(tmp_path):
    path = write_json(tmp_path / "a" / "b" / "c.json", [1, 2])
    assert json.loads(path.read_text()) == [1, 2] and path.read_text().endswith("\n")
