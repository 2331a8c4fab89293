"""A router on fakes (FakeRuntime, MemoryStore, task.Clock) with the web doors on it."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from libchat.library import ProgramLibrary
from libchat.router import Router
from libchat.testing import FakeRuntime, MemoryStore
from libchat.web import app as web
from tests.conftest import BUNDLED


class Pushes:
    """A pusher that records what each user was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def push(self, user_id: str, event: dict[str, Any]) -> None:
        self.sent.append((user_id, event))

    def to(self, user_id: str) -> list[dict[str, Any]]:
        return [e for u, e in self.sent if u == user_id]


class World:
    def __init__(self, secret: bytes | None = None, **settings: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.runtime = FakeRuntime()
        self.store = MemoryStore()
        self.router = Router(self.clock, ProgramLibrary([BUNDLED], now=self.clock.seconds),
                             self.runtime, self.store)
        self.web = web.build(self.router, self.clock, web.WebSettings(secret=secret, **settings))
        self.gateway = self.web.gateway
        self.pushes = Pushes()
        self.gateway.pushers.append(self.pushes)

    def instance(self, n: int = -1) -> Any:
        inst = self.runtime.started[n]
        if not inst.connected:
            inst.connect()
        return inst
