"""Fixtures for download tests: a real HTTP server on 127.0.0.1 and official-layout prompt archives.

The server speaks enough HTTP/1.1 for a resumable download: ``Range: bytes=N-`` gets ``206`` with
``Content-Range`` (or ``416`` past the end), it can ignore ranges (``200``), and it can cut one
answer short to simulate a dropped connection. It records every request's ``Range`` header.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sd4match_sdk.data import SPAIR_CATEGORIES
from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule

#: Official directory names (docs/design.md §12.1).
SINGLE = "Single_spair_sd2-1_TokenEmbeds75"
CLASS = "Class_spair_sd2-1_TokenEmbeds75"
CPM = "CPM_spair_sd2-1_Pair-DINO-Feat-G25-C50"


@dataclass
class Served:
    """What the server answers: ``content`` at ``/pretrained_prompts.zip``; everything else is 404."""

    content: bytes = b""
    honour_ranges: bool = True
    cut_after: int | None = None  # the next answer stops after this many bytes (then the connection closes)
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        served: Served = self.server.served  # type: ignore[attr-defined]
        if self.path != "/pretrained_prompts.zip":
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        served.ranges.append(wanted)
        data, start = served.content, 0
        if wanted and served.honour_ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if served.cut_after is not None:
            body, served.cut_after = body[: served.cut_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A started server; ``$SD4MATCH_PROMPTS_URL`` points at its archive."""
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/pretrained_prompts.zip"
    monkeypatch.setenv("SD4MATCH_PROMPTS_URL", served.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SDK cache (``$SD4MATCH_CACHE``)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SD4MATCH_CACHE", str(path))
    return path


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def official_files(width: int = 32) -> dict[str, bytes]:
    """The three SPair-71k prompts in the official formats, ``width`` wide (the tiny text encoder's 32)."""
    generator = torch.Generator().manual_seed(0)
    single = {"dataset": torch.randn(1, 77, width, generator=generator)}
    per_class = {c: torch.randn(1, 77, width, generator=generator) for c in SPAIR_CATEGORIES}
    torch.manual_seed(0)
    cpm = ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=width)).state_dict()
    return {f"{SINGLE}/caption.pt": _saved(single), f"{CLASS}/caption.pt": _saved(per_class),
            f"{CPM}/ckpt.pt": _saved(cpm)}  # fmt: skip


def build_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip archive of ``members`` (name -> bytes), plus symbolic-link members (name -> target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK
            archive.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def prompt_files() -> dict[str, bytes]:
    return official_files()
