"""A client of the front protocol, for the terminal client, tests and benchmarks."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, endpoints
from twisted.python.failure import Failure

from libchat.jsonc import loads
from libchat.protocol.wire import MAGIC, FrameError, FrameProtocol


class FrameClient(FrameProtocol):
    """Collects every event the server sends into a queue."""

    def __init__(self, magic: int = MAGIC) -> None:
        self.magic = magic
        self.events: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def frameReceived(self, event_type: int, body: bytes) -> None:
        self.events.put(loads(body))

    def frameError(self, error: FrameError) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, event: dict[str, Any]) -> None:
        self.sendEvent(event)

    def next_event(self, clock: Any, timeout: float = 10.0) -> "defer.Deferred[dict[str, Any]]":
        """The next event, failing with ``defer.TimeoutError`` after ``timeout``."""
        return self.events.get().addTimeout(timeout, clock)


def connect(reactor: Any, description: str, magic: int = MAGIC) -> "defer.Deferred[FrameClient]":
    """Connect to a front endpoint (a Twisted client endpoint string)."""
    endpoint = endpoints.clientFromString(reactor, description)
    return endpoints.connectProtocol(endpoint, FrameClient(magic))



