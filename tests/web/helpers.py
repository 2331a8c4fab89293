"""The core unit tests' world (a router on fakes and a task.Clock) with the web
doors built on it, and a pusher that records what each user was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libchat.doors.web import app as web

from ..helpers import World as CoreWorld


class Pushes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def push(self, user_id: str, event: dict[str, Any]) -> None:
        self.sent.append((user_id, event))

    def to(self, user_id: str) -> list[dict[str, Any]]:
        return [e for u, e in self.sent if u == user_id]


class World(CoreWorld):
    def __init__(self, tmp: Path, secret: bytes | None = None, **settings: Any) -> None:
        super().__init__(tmp)
        self.web = web.build(self.router, self.clock, web.WebSettings(secret=secret, **settings))
        self.gateway = self.web.gateway
        self.pushes = Pushes()
        self.gateway.pushers.append(self.pushes)

    def instance(self, n: int = -1) -> Any:
        """The n-th started instance, connected."""
        inst = self.runtime.started[n]
        if not inst.connected:
            inst.connect()
        return inst
