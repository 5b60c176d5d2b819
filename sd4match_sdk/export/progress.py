"""Signs of life during an export: each stage's line, and its elapsed time ticking while it runs.

Exporting SD 2.1's UNet takes about a minute on a CPU with no output of its own; the export's log
lines (``loading ...``, ``exporting unet.onnx ...``, ``building unet.plan ...``) each start a stage,
and a tqdm status line shows the running stage's elapsed seconds, refreshed once a second by a
daemon thread, until the next stage or the end. The finished stage's line is kept with its time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["StageLog"]


class StageLog:
    """A ``print``-like ``log`` for :func:`~sd4match_sdk.export.export_engine` that times its stages.

    Args:
        enabled: print nothing when ``False`` (``--quiet``).
        stream: where the lines go (stderr).
        refresh_s: seconds between refreshes of the ticking status line.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, refresh_s: float = 1.0) -> None:
        self.enabled, self.refresh_s = enabled, refresh_s
        self.stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._stage: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> StageLog:
        if self.enabled:
            self._bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=self.stream, leave=False, desc="export")
            self._ticker = threading.Thread(target=self._tick, name="sd4match-export-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._finish_stage()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.close()

    def __call__(self, *parts: Any, **_: Any) -> None:
        """A log line: ends the running stage (printing its time) and starts the next."""
        if not self.enabled:
            return
        self._finish_stage()
        message = " ".join(str(p) for p in parts)
        self._stage = (message, time.perf_counter())
        if self._bar is not None:
            self._bar.reset()
            self._bar.set_description_str(message.removesuffix(" ..."))

    def _finish_stage(self) -> None:
        if self._stage is None:
            return
        message, started = self._stage
        self._stage = None
        line = f"{message} {time.perf_counter() - started:.1f} s" if message.endswith("...") else message
        (self._bar.write if self._bar is not None else print)(line, file=self.stream)

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh_s):
            if self._bar is not None:
                self._bar.refresh()
