"""A real ``twistd libchat`` subprocess for the web front doors' end-to-end tests.

The server listens on port 0 everywhere; the test reads the bound ports from
its readiness lines ("libchat web listening on host:port") and always stops it
(SIGTERM, then SIGKILL) in a finalizer.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import BUNDLED, ROOT

TWISTD = Path(sys.executable).with_name("twistd")
SECRET = "test-secret-of-at-least-32-bytes-0123456789"
LISTENING = re.compile(r"libchat (\w+) listening on ([\d.]+):(\d+)")
START_TIMEOUT = 30.0
# what a healthy server never logs
BAD_LOG = re.compile(r"Unhandled Error|Traceback \(most recent call last\)|#critical\]")


class Server:
    """One running ``twistd -n libchat``; ``lines`` is its log so far."""

    def __init__(self, args: list[str], data: Path, twistd_args: list[str] | None = None) -> None:
        self.data = data
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", *(twistd_args or []), "libchat",
             "--front", "tcp:0:interface=127.0.0.1", "--api", "tcp:0:interface=127.0.0.1",
             "--web", "tcp:0:interface=127.0.0.1", "--data", str(data), *args],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("libchat ready", START_TIMEOUT)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first log line (from now on) containing ``text``; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"server did not log {text!r} in {timeout}s:\n"
                                   + "\n".join(self.lines[-40:]))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("server exited:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            m = LISTENING.search(line)
            if m:
                self.ports[m.group(1)] = int(m.group(3))
            if text in line:
                return line

    def drain(self) -> None:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    @property
    def web(self) -> int:
        return self.ports["web"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)  # it ends at EOF: every line is queued
        self.drain()

    def bad_lines(self) -> list[str]:
        self.drain()
        return [line for line in self.lines if BAD_LOG.search(line)]


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


__all__ = ["BUNDLED", "SECRET", "Server", "start_server"]
