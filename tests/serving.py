"""Run a real libchat in the test process (real reactor, Node, sockets).

The in-process twin of the subprocess launcher (``tests/launcher.py``) for the
tests that look at the live service objects: the same port-0 listeners (the
web door included, so no default port is ever taken), the same program
library. Process helpers (``alive``) are the launcher's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor

from libchat.tools.client import FrameClient, connect
from libchat.tap import LibchatService, Options, makeService

from .launcher import BUNDLED, FIXTURES, LOOPBACK_ZERO, alive

__all__ = ["Server", "alive", "message", "wait_until"]


class Server:
    def __init__(self, tmp: Path, *args: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.data = tmp / "data"
        self.options = Options()
        self.options.parseOptions([
            "--front", LOOPBACK_ZERO, "--api", LOOPBACK_ZERO, "--web", LOOPBACK_ZERO,
            "--programs", f"{FIXTURES}{os.pathsep}{BUNDLED}", "--data", str(self.data),
            "--kill-grace", "1", *args])
        self.service: LibchatService = makeService(self.options, reactor)
        self.clients: list[FrameClient] = []

    def start(self) -> Server:
        self.service.startService()
        return self

    def port(self, role: str) -> int:
        port = self.service.listening(role)[0].port
        assert port is not None, f"{role} is not listening"
        return int(port.getHost().port)  # type: ignore[attr-defined] # a TCP address

    @defer.inlineCallbacks
    def client(self) -> Any:
        c = yield connect(reactor, f"tcp:host=127.0.0.1:port={self.port('front')}")
        self.clients.append(c)
        return c

    def stop(self) -> defer.Deferred[Any]:
        """Close our clients (waiting until they are closed) and stop the service."""
        for c in self.clients:
            if c.transport is not None:
                c.transport.loseConnection()
        closed = defer.gatherResults([c.closed for c in self.clients])
        return closed.addCallback(lambda _: self.service.stopService())


def message(content: str, dialog_id: str = "d1", user_id: str = "u1", **extra: Any) -> dict:
    return {"event_type": 1001, "dialog_id": dialog_id, "user_id": user_id,
            "messages": {"content": content}, **extra}


@defer.inlineCallbacks
def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll a condition the server cannot signal (a process's death), bounded."""
    from twisted.internet import task
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        yield task.deferLater(reactor, step, lambda: None)
        waited += step
