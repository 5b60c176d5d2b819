"""The import layers of pyproject.toml's [tool.importlinter] hold, and a broken one is caught.

``lint-imports`` reads every import of the package, function-local ones included, so an upward
import or a cycle hidden inside a function fails here (and therefore in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sd4match_sdk"


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]
    env = {"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"}
    args = ["--config", str(cwd / "pyproject.toml"), "--no-cache"]
    return subprocess.run(command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers() -> None:
    pytest.importorskip("importlinter")
    result = _lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    """The package's Python files and the layer contracts, copied to change them."""
    pytest.importorskip("importlinter")
    shutil.copytree(PACKAGE, tmp_path / "sd4match_sdk", ignore=shutil.ignore_patterns("*.so", "assets", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("ops/geometry.py", "from ..matcher import Matcher  # noqa: F401", "Layers"),
        ("engine/format.py", "def _open():\n    from .runtime import open_engine  # noqa: F401\n", "Layers"),
        ("export/writer.py", "from ..engine.runtime import open_engine  # noqa: F401", "never imports the runtime"),
        ("prompts/types.py", "def _files():\n    from .files import load_prompt  # noqa: F401\n", "No import cycles"),
    ],
    ids=["upward", "function-local upward", "exporter to runtime", "cycle inside a package"],
)
def test_a_deliberate_violation_is_caught(package_copy: Path, module: str, line: str, broken: str) -> None:
    path = package_copy / "sd4match_sdk" / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    result = _lint_imports(package_copy, package_copy)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "BROKEN" in result.stdout
    broken_lines = [ln for ln in result.stdout.splitlines() if "BROKEN" in ln or broken in ln]
    assert any(broken in ln for ln in broken_lines), result.stdout[-3000:]
