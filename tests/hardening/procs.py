"""Real-process helpers: a ``twistd libchat`` subprocess (the shared
launcher, ``tests/launcher.py``), a blocking frame client, and bounded waits
for things no process can signal (another process's death)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

from libchat.jsonc import loads
from libchat.protocol.wire import FrameDecoder, encode_event

from ..launcher import BUNDLED, FIXTURES, Libchat, alive, wait_until

HERE = Path(__file__).resolve().parent
__all__ = ["FrameConn", "Twistd", "alive", "message", "programs_dir", "wait_until"]


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


class Twistd(Libchat):
    """``twistd -n libchat`` with a program library, in ``tmp`` (the shared
    launcher, ``tests/launcher.py``, under the hardening tests' signature)."""

    def __init__(self, tmp: Path, programs: Path, *args: str, data: Path | None = None,
                 runtime_base: Path | None = None) -> None:
        super().__init__(tmp, "--kill-grace", "1", *args, programs=programs,
                         data=data or tmp / "data", runtime_dir=runtime_base)
        self.tmp = tmp

    def start(self, timeout: float = 20.0) -> "Twistd":
        super().start(timeout)
        return self

    def connect(self) -> "FrameConn":
        return FrameConn(self.ports["front"])

    def stop(self, timeout: float = 20.0) -> int:  # type: ignore[override]
        code = super().stop(grace=timeout)
        assert code is not None
        return code


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

