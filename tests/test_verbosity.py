"""diffusers/transformers stay quiet in the commands unless --verbose; the hub's download bars stay."""

from __future__ import annotations

import diffusers
import pytest
import transformers
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from sd4match_sdk.verbosity import set_library_verbosity


@pytest.fixture(autouse=True)
def restore_libraries():
    levels = {lib: lib.utils.logging.get_verbosity() for lib in (diffusers, transformers)}
    bars = {lib: lib.utils.logging.is_progress_bar_enabled() for lib in (diffusers, transformers)}
    hub_bars = not are_progress_bars_disabled()
    yield
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity(levels[lib])
        (lib.utils.logging.enable_progress_bar if bars[lib] else lib.utils.logging.disable_progress_bar)()
    (enable_progress_bars if hub_bars else disable_progress_bars)()


def test_quiet_unless_verbose() -> None:
    set_library_verbosity(False)
    for lib in (diffusers, transformers):
        assert lib.utils.logging.get_verbosity() == lib.utils.logging.ERROR
        assert not lib.utils.logging.is_progress_bar_enabled()
    assert not are_progress_bars_disabled()  # downloads keep their bars
    set_library_verbosity(True)
    for lib in (diffusers, transformers):
        assert lib.utils.logging.get_verbosity() == lib.utils.logging.INFO
        assert lib.utils.logging.is_progress_bar_enabled()
