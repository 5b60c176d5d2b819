"""What every command line shares (docs/design.md §13.17): quiet libraries unless ``--verbose``,
output paths checked before any model runs, and user errors as one line instead of a traceback.

``sd4match``, ``sd4match-export``, ``sd4match-train`` and ``sd4match-eval`` run their command
through :func:`run_command`: an :class:`~sd4match_sdk.errors.SD4MatchError` (and a file-system
``OSError``, e.g. a full disk) prints ``prog: error: message`` and exits with status 2; with
``--verbose`` the traceback follows. :func:`quiet_libraries` silences the logs and progress bars
of diffusers, transformers and huggingface_hub (and their warnings) for the duration of a command
and restores them afterwards, so calling ``main()`` from Python leaves no global state changed.
The installed programs and ``python -m`` enter through :func:`start_program`, which makes the one
process-wide choice a library must leave to the program: how worker processes start.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from .errors import ConfigError, SD4MatchError

__all__ = [
    "QUIET_LIBRARIES",
    "add_verbose_flag",
    "check_image_output",
    "check_output_dir",
    "check_output_file",
    "quiet_libraries",
    "run_command",
    "start_program",
]

#: Libraries whose logs, progress bars and warnings a command hides unless ``--verbose``.
QUIET_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "accelerate", "torch", "onnx", "onnxscript")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: show the libraries' logs, progress bars and warnings, and tracebacks."""
    parser.add_argument(
        "--verbose", action="store_true", help="show library logs, download/loading progress bars, warnings and tracebacks"
    )


def _logging_modules() -> list:
    import diffusers
    import transformers

    return [diffusers.utils.logging, transformers.utils.logging]


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False, hub_progress: bool = False) -> Iterator[None]:
    """Silence the libraries' logs, progress bars and warnings inside the block (not with ``verbose``);
    ``hub_progress`` keeps the Hugging Face hub's download bars (``sd4match download``)."""
    if verbose:
        yield
        return
    import huggingface_hub.utils as hub

    modules = _logging_modules()
    saved = [(m.get_verbosity(), m.is_progress_bar_enabled()) for m in modules]
    hub_bars_disabled = hub.are_progress_bars_disabled()
    for m in modules:
        m.set_verbosity_error()
        m.disable_progress_bar()  # transformers' also turns the hub's bars off, hence the line below
    _set_hub_bars(hub, enabled=hub_progress and not hub_bars_disabled)
    try:
        with warnings.catch_warnings():
            for name in QUIET_LIBRARIES:
                warnings.filterwarnings("ignore", module=name)
            yield
    finally:
        for m, (verbosity, bars) in zip(modules, saved):
            m.set_verbosity(verbosity)
            (m.enable_progress_bar if bars else m.disable_progress_bar)()
        _set_hub_bars(hub, enabled=not hub_bars_disabled)


def _set_hub_bars(hub: ModuleType, enabled: bool) -> None:
    (hub.enable_progress_bars if enabled else hub.disable_progress_bars)()


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder on the way to ``path`` (its parents), if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output file that cannot be written.

    Raises:
        ConfigError: a parent is a regular file, the path is a folder, or the nearest existing
            folder is not writable.
    """
    path = Path(path).expanduser()
    blocking = _blocking_file(path)
    if blocking is not None:
        raise ConfigError(f"{option} {str(path)!r}: {str(blocking)!r} is a file, not a folder; choose another path")
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder; give a file name, e.g. {str(path / 'out')!r}")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {str(path)!r} is not writable here; choose a path in a folder you can write to")
    return path


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that cannot be created or written.

    Raises:
        ConfigError: the path or a parent is a regular file, or the nearest existing folder is
            not writable.
    """
    path = Path(path).expanduser()
    blocking = path if path.exists() and not path.is_dir() else _blocking_file(path)
    if blocking is not None:
        raise ConfigError(f"{option} {str(path)!r}: {str(blocking)!r} is a file, not a folder; choose another directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {str(path)!r} is not writable here; choose a directory you can write to")
    return path


def check_image_output(path: str | os.PathLike, option: str) -> Path:
    """:func:`check_output_file`, and OpenCV must be able to write the format its suffix names.

    Raises:
        ConfigError: as :func:`check_output_file`, or a suffix OpenCV cannot write (``.xyz``, none).
    """
    import cv2

    path = check_output_file(path, option)
    if not cv2.haveImageWriter(str(path)):
        raise ConfigError(f"{option} {str(path)!r}: OpenCV cannot write {path.suffix or 'files without a suffix'}; use .png or .jpg")
    return path


def run_command(
    prog: str,
    command: Callable[[], None],
    verbose: bool = False,
    where: Callable[[], str] = lambda: "",
    hub_progress: bool = False,
) -> int:
    """Run a command with quiet libraries; a user error is one line on stderr and exit status 2.

    Args:
        prog: the program name, printed before the message.
        command: the command's work.
        verbose: show the libraries' output, and the traceback of an error.
        where: which process failed, for the message (``" (rank 1 of 2)"`` under torchrun).
        hub_progress: keep the hub's download progress bars while the libraries are quiet.

    Returns:
        0, or 2 after an :class:`SD4MatchError` or a file-system ``OSError``.
    """
    try:
        with quiet_libraries(verbose, hub_progress):
            command()
    except SD4MatchError as err:
        return _report(f"{prog}: error{where()}", str(err), verbose)
    except OSError as err:  # a full disk, a permission denied while writing: not a bug of the SDK
        name = f" ({err.filename})" if err.filename else ""
        message = f"{err.strerror or err}{name}; check the path, its permissions and the free space"
        return _report(f"{prog}: error{where()}", message, verbose)
    return 0


def _report(prefix: str, message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"{prefix}: {message}", file=sys.stderr)
    return 2


def start_program(main: Callable[[], int]) -> NoReturn:
    """The entry of an installed command or ``python -m``: start worker processes from a fork server,
    then exit with ``main()``'s status.

    A plain ``fork`` (Linux's default) copies a process that runs other threads (torch.distributed's,
    tqdm's monitor, a finished loader's queue feeder); on CPython 3.11 a child forked while one of
    them holds an interpreter lock waits for it forever (docs/design.md §13.19). The fork server is
    a fresh single-threaded process that forks the DataLoader workers instead. Only the program's
    entry sets this, once: the choice is process-wide, and a library call leaves it to its caller.
    """
    if "forkserver" in multiprocessing.get_all_start_methods() and multiprocessing.get_start_method(allow_none=True) is None:
        multiprocessing.set_start_method("forkserver")
    sys.exit(main())
