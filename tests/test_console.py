"""What every command shares: libraries quiet unless --verbose (and restored afterwards), the hub's
download bars kept for `sd4match download`, user errors as one line (docs/design.md §13.17)."""

from __future__ import annotations

import diffusers
import transformers
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from sd4match_sdk.console import quiet_libraries, run_command
from sd4match_sdk.errors import ConfigError


def _state() -> tuple:
    libraries = tuple((lib.utils.logging.get_verbosity(), lib.utils.logging.is_progress_bar_enabled()) for lib in (diffusers, transformers))
    return libraries, are_progress_bars_disabled()


def test_quiet_inside_and_restored_after() -> None:
    enable_progress_bars()
    before = _state()
    with quiet_libraries():
        for lib in (diffusers, transformers):
            assert lib.utils.logging.get_verbosity() == lib.utils.logging.ERROR
            assert not lib.utils.logging.is_progress_bar_enabled()
        assert are_progress_bars_disabled()
    assert _state() == before


def test_downloads_keep_the_hub_bars_and_verbose_changes_nothing() -> None:
    enable_progress_bars()
    with quiet_libraries(hub_progress=True):
        assert not are_progress_bars_disabled()
        assert not diffusers.utils.logging.is_progress_bar_enabled()
    disable_progress_bars()
    before = _state()
    with quiet_libraries(verbose=True):
        assert _state() == before
    enable_progress_bars()


def test_a_user_error_is_one_line(capsys) -> None:
    def fail() -> None:
        raise ConfigError("bad thing; do the other thing")

    assert run_command("prog", fail, where=lambda: " (rank 1 of 2)") == 2
    err = capsys.readouterr().err
    assert err == "prog: error (rank 1 of 2): bad thing; do the other thing\n"


def test_programs_start_their_workers_from_a_fork_server(tmp_path) -> None:
    """The installed commands and ``python -m`` enter through start_program (docs/design.md §13.19)."""
    import multiprocessing
    import subprocess
    import sys

    import multiprocess  # tests/, on pytest's pythonpath

    probe = ("import multiprocessing; from sd4match_sdk.console import start_program; "
             "start_program(lambda: print(multiprocessing.get_start_method()) or 3)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=multiprocess.environment(), timeout=120)
    assert done.returncode == 3, done.stderr  # main()'s status is the exit status
    expected = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else multiprocessing.get_start_method()
    assert done.stdout.strip() == expected
    for module in ("sd4match_sdk.evaluation", "sd4match_sdk.training"):
        entry = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['x', '--version']; import {module}.__main__"],
                               capture_output=True, text=True, env=multiprocess.environment(), timeout=120)  # fmt: skip
        assert entry.returncode == 0 and entry.stdout.strip(), entry.stderr
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("sd4match-")}
    assert scripts["sd4match-eval"] == "sd4match_sdk.evaluation.cli:run" and scripts["sd4match-train"] == "sd4match_sdk.training.cli:run"
