"""A verified fake of the post-office hub (IHub) for the runtime's tests."""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from libchat.doors.postoffice.seam import IHub, IHubListener


@implementer(IHub)
class FakeHub:
    """Clients connect and reply by hand; ``sent`` records every delivery."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.listeners: dict[str, IHubListener] = {}
        self.sent: list[dict[str, Any]] = []

    def clients(self) -> list[str]:
        return list(self.connected)

    def listen(self, prefix: str, listener: IHubListener) -> None:
        self.listeners[prefix] = listener

    def send(self, message: dict[str, Any]) -> bool:
        if message["to"] not in self.connected:
            return False
        self.sent.append(message)
        return True

    # -- the test drives -------------------------------------------------------------

    def connect(self, client_id: str) -> None:
        if client_id not in self.connected:
            self.connected.append(client_id)
        for listener in self.listeners.values():
            listener.client_connected(client_id)

    def disconnect(self, client_id: str) -> None:
        self.connected.remove(client_id)
        for listener in self.listeners.values():
            listener.client_gone(client_id)

    def reply(self, client_id: str, to: str, content: Any, **extra: Any) -> None:
        message = {"from": client_id, "to": to, "subject": "re", "content": content,
                   "type": "msg", **extra}
        for prefix, listener in self.listeners.items():
            if to.startswith(prefix):
                listener.envelope(message, "")
