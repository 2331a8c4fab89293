"""Real-process helpers: a ``twistd libchat`` subprocess, a blocking frame
client, and bounded waits for things no process can signal (another
process's death)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from libchat.jsonc import loads
from libchat.protocol.wire import FrameDecoder, encode_event

from ..helpers import BUNDLED, FIXTURES, ROOT

HERE = Path(__file__).resolve().parent
TWISTD = Path(sys.executable).parent / "twistd"
LISTENING = re.compile(r"libchat (\w+) listening on [\d.]+:(\d+)")


def programs_dir(tmp: Path, *names: str) -> Path:
    """A program library holding copies of the named fixtures/bundled programs."""
    target = tmp / "programs"
    target.mkdir(exist_ok=True)
    for name in names:
        for base in (HERE / "programs", FIXTURES, BUNDLED):
            if (base / name).is_dir():
                shutil.copytree(base / name, target / name, dirs_exist_ok=True)
                break
        else:
            raise LookupError(name)
    return target


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a condition nothing can signal (a process's death), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.02)


class Twistd:
    """``twistd -n libchat`` in a subprocess; readiness from its log lines."""

    def __init__(self, tmp: Path, programs: Path, *args: str, data: Path | None = None,
                 runtime_base: Path | None = None) -> None:
        self.tmp = tmp
        self.data = data or tmp / "data"
        # socket paths must fit in sun_path: a short base, not under tmp
        self._own_base = runtime_base is None
        self.runtime_base = runtime_base or Path(tempfile.mkdtemp(prefix="lc-", dir="/tmp"))
        self.runtime_base.mkdir(exist_ok=True)
        self.args = ["--front", "tcp:0:interface=127.0.0.1", "--api",
                     "tcp:0:interface=127.0.0.1", "--programs", str(programs),
                     "--data", str(self.data), "--runtime-dir", str(self.runtime_base),
                     "--kill-grace", "1", *args]
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._cond = threading.Condition()

    def start(self, timeout: float = 20.0) -> "Twistd":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "libchat", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.tmp)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or "front" not in self.ports:
            self.close()
            raise AssertionError("twistd not ready:\n" + "\n".join(self.lines[-40:]))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = open(self.tmp / f"twistd-{self.proc.pid}.log", "a")  # kept for post-mortems
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.write(line + "\n")
            log.flush()
            with self._cond:
                self.lines.append(line)
                m = LISTENING.search(line)
                if m:
                    self.ports[m.group(1)] = int(m.group(2))
                self._cond.notify_all()
            if "libchat ready" in line:
                self._ready.set()
        log.close()
        self._ready.set()

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first log line matching ``pattern`` (waits for it, bounded)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {pattern!r}:\n" +
                                         "\n".join(self.lines[-30:]))
                self._cond.wait(left)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def run_id(self) -> str:
        """The marker id of this run's processes (from the watchdog's log line)."""
        return self.wait_log(r"watchdog started as pid \d+ for run (\w+)").group(1)

    def watchdog_pid(self) -> int:
        return int(self.wait_log(r"watchdog started as pid (\d+)").group(1))

    def connect(self) -> "FrameConn":
        return FrameConn(self.ports["front"])

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Finalizer: kill the server if still running, remove its runtime base."""
        self.kill9()
        if self._own_base:
            shutil.rmtree(self.runtime_base, ignore_errors=True)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class FrameConn:
    """A blocking client of the front protocol (tests only)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = FrameDecoder()
        self.events: list[dict[str, Any]] = []
        self.timeout = timeout

    def send(self, event: dict[str, Any]) -> None:
        self.sock.sendall(encode_event(event))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            frames, error = self.decoder.feed(data)
            assert error is None, error
            self.events.extend(loads(body) for _, body in frames)
        return self.events.pop(0)

    def recv_until(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = 10.0) -> list[dict[str, Any]]:
        """Events up to and including the first that satisfies ``predicate``."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.recv(max(0.01, deadline - time.monotonic()))
            got.append(event)
            if predicate(event):
                return got

    def close(self) -> None:
        self.sock.close()


def message(content: str, dialog_id: str, user_id: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog_id, "user_id": user_id,
            "messages": {"content": content}, **extra}

