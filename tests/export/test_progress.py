"""Export stages show signs of life: each stage's line with its time, the running one ticking."""

from __future__ import annotations

import io
import re
import time

from sd4match_sdk.export.progress import StageLog


def test_stages_are_timed_and_the_running_one_ticks() -> None:
    stream = io.StringIO()
    with StageLog(stream=stream, refresh_s=0.05) as log:
        log("loading tiny ...")
        log("exporting unet.onnx (fp32) ...")
        time.sleep(0.3)  # a long stage: the status line is refreshed meanwhile
        log("wrote engines/x/manifest.json")
    text = stream.getvalue()
    assert re.search(r"loading tiny \.\.\. \d+\.\d s\n", text)
    assert re.search(r"exporting unet\.onnx \(fp32\) \.\.\. \d+\.\d s\n", text)
    assert "wrote engines/x/manifest.json\n" in text
    assert text.count("exporting unet.onnx (fp32) [") >= 2  # the status line was redrawn while the stage ran


def test_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    with StageLog(enabled=False, stream=stream) as log:
        log("exporting unet.onnx ...")
    assert stream.getvalue() == ""
