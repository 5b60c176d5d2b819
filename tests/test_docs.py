"""What the docs tell a new user holds: every documented command parses, links and paths exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "cpp" / "README.md"]
CLIS = ("sd4match", "sd4match-eval", "sd4match-train", "sd4match-export")


def _parsers():
    from sd4match_sdk.cli import _build_parser as sd4match
    from sd4match_sdk.evaluation.cli import _build_parser as evaluation
    from sd4match_sdk.export.cli import build_parser as export
    from sd4match_sdk.training.cli import _build_parser as training

    return {"sd4match": sd4match(), "sd4match-eval": evaluation(), "sd4match-train": training(), "sd4match-export": export()}


def documented_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every console-script command in a code block, or in an inline span that
    is a whole command line (``... && sd4match demo ...``, the README's first lines); other inline
    spans name a command or a flag in passing."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        spans = [s for s in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)) if "&&" in s]
        for chunk in [*blocks, *spans]:
            joined = re.sub(r"\\\n\s*", " ", chunk)
            for line in joined.splitlines():
                for part in line.split("&&"):
                    part = part.split(" #")[0].strip()
                    if part.split(" ")[0] in CLIS and not re.search(r"[\[\]|]|\.\.\.|\bD\b$", part):
                        found.append((doc.relative_to(ROOT).as_posix(), part))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    files = {f for f, _ in COMMANDS}
    assert {"README.md", "docs/reproduce.md", "docs/training.md"} <= files
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{f}: {c[:60]}" for f, c in COMMANDS])
def test_every_documented_command_parses(doc: str, command: str) -> None:
    """Each flag the docs show exists, with a value of the right kind (the behaviour is tested elsewhere)."""
    argv = shlex.split(command)
    parser = _parsers()[argv[0]]
    try:
        parser.parse_args(argv[1:])
    except SystemExit as err:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {err.code})")


def test_the_new_users_path_is_three_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    path = readme[readme.index("## From nothing to the paper's Table 2: three commands"):]
    block = re.search(r"```\n(.*?)```", path, flags=re.S).group(1).strip().splitlines()
    assert [line.split()[:2] for line in block] == [["sd4match", "download"], ["sd4match-eval", "--dataset"],
                                                     ["sd4match", "compare"]]  # fmt: skip
    assert "--prompt official:single_spair" in block[1] and block[2].split()[2] == block[1].split("--out ")[1].split()[0]


def test_the_paper_the_code_and_the_tiny_models_are_named() -> None:
    readme = (ROOT / "README.md").read_text()
    for link in ("https://arxiv.org/abs/2310.17569", "https://github.com/ActiveVisionLab/SD4Match"):
        assert link in readme and link in (ROOT / "docs" / "reproduce.md").read_text()
    assert "sd4match_sdk.testing import build_tiny_sd" in readme
    assert "build_tiny_sd" in (ROOT / "docs" / "training.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme and "No model downloads" in readme


def test_the_cpp_docs_use_one_dependency_path() -> None:
    """README.md, docs/cpp.md and examples/cpp/README.md fetch into fetch_deps.sh's default
    (examples/cpp/deps, CMake's default ONNXRUNTIME_ROOT), or name the placeholder DEST."""
    commands = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "cpp.md", ROOT / "examples" / "cpp" / "README.md"):
        text = doc.read_text()
        code = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
        commands += [(doc.name, line.split("#")[0]) for chunk in code for line in chunk.splitlines()
                     if re.match(r"^\s*(\S+=\S+ )*examples/cpp/fetch_deps\.sh", line)]  # fmt: skip
        for root in re.findall(r"-DONNXRUNTIME_ROOT=(\S+)", text):
            assert root.strip("`.,;)]") == "DEST", (doc.name, root)
    assert {name for name, _ in commands} == {"README.md", "cpp.md"}  # examples/cpp/README.md too (named README.md)
    for name, line in commands:
        after = line.split("fetch_deps.sh", 1)[1].split()
        assert not after or after[0] in ("DEST", "[DEST]"), (name, line)


def test_the_cpp_json_example_is_printed_as_the_program_prints_it() -> None:
    text = (ROOT / "docs" / "cpp.md").read_text()
    block = re.search(r"```json\n(.*?)\n```", text, flags=re.S).group(1)
    assert block == json.dumps(json.loads(block), indent=2)  # nlohmann::json dump(2) has the same layout
    assert "std::cout << out.dump(2)" in (ROOT / "examples" / "cpp" / "src" / "main.cpp").read_text()


def test_provenance_lists_only_folders_that_exist() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    listed = re.findall(r"^- `([^`]+)/`", (fixtures / "PROVENANCE.md").read_text(), flags=re.M)
    assert listed and all((fixtures / name).is_dir() for name in listed), listed
    assert {name.split("/")[0] for name in listed} == {p.name for p in fixtures.iterdir() if p.is_dir()}


def test_onnx_runtime_figures_name_their_cpu() -> None:
    export = (ROOT / "docs" / "export.md").read_text()
    section = export[export.index("## Benchmark"):export.index("## Tests")]
    assert "depends on the CPU" in section
    rows = [line for line in section.splitlines() if line.startswith("|") and re.search(r"\d\.\d+x", line)]
    assert len(rows) >= 3
    for row in rows:
        assert re.search(r"AMD EPYC|Intel Xeon", row), row
