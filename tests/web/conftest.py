"""A real ``twistd libchat`` subprocess for the web front doors' end-to-end tests.

The shared launcher (``tests/launcher.py``): the server listens on port 0
everywhere; the test reads the bound ports from its readiness lines ("libchat
web listening on host:port") and always stops it (SIGTERM, then SIGKILL) in a
finalizer.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..launcher import BUNDLED, READY, ROOT, Libchat

SECRET = "test-secret-of-at-least-32-bytes-0123456789"
# Debian's Chromium, driven by Playwright (never `playwright install`); the
# chat page's and the operator console's tests share one launch per module
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000

START_TIMEOUT = 30.0


class Server(Libchat):
    """One running ``twistd -n libchat``, started by the constructor; ``lines``
    is its log so far."""

    def __init__(self, args: list[str], data: Path, twistd_args: list[str] | None = None) -> None:
        super().__init__(data.with_name(data.name + "-run"), *args, programs=None, data=data,
                         twistd_args=twistd_args or [], cwd=ROOT)
        self.start(START_TIMEOUT)
        self.wait_for(READY, 0)  # later wait_for calls look at what comes after

    def drain(self) -> None:
        """Kept for the tests: every line is already in ``lines``."""

    def stop(self, grace: float = 15.0) -> int | None:
        code = super().stop(grace)
        self.remove_runtime_dir()
        return code


def start_server(tmp_path_factory: Any, *args: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("data")
    programs = ["--programs", str(BUNDLED)]
    server = Server([*programs, *args], data)
    try:
        yield server
    finally:
        server.stop()
    bad = server.bad_lines()
    assert not bad, "the server logged errors:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: Any) -> Iterator[Server]:
    """JWT mode, small limits so the limits can be reached quickly."""
    yield from start_server(tmp_path_factory, "--auth-secret", SECRET, "--ws-rate", "5",
                            "--max-frame", "65536", "--ws-ping", "1", "--ws-pong", "2",
                            "--ws-max-per-user", "3")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: Any) -> Iterator[Server]:
    """Development mode (no secret), default limits."""
    yield from start_server(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def rest(server: Libchat, method: str, path: str, user: str, body: Any = None) -> Any:
    """One REST call in development mode (``X-User-Id``); the decoded JSON
    answer (None for an empty body)."""
    request = urllib.request.Request(
        server.url(path), method=method, headers={"X-User-Id": user,
                                                   "Content-Type": "application/json"},
        data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


__all__ = ["BUNDLED", "SECRET", "Server", "start_server"]
