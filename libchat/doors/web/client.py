"""A WebSocket client of ``/ws`` (autobahn), for tests, tools and benchmarks."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IReactorTime

from libchat.jsonc import dumps, loads


class Refused(Exception):
    """The server refused the handshake or closed before it finished."""


class ChatClient(WebSocketClientProtocol):
    """Collects every event the server pushes into a queue."""

    answer_pings = True

    def __init__(self) -> None:
        super().__init__()
        self.events: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.opened: defer.Deferred[ChatClient] = defer.Deferred()
        self.closed: defer.Deferred[int | None] = defer.Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.events.put(loads(payload))

    def onPing(self, payload: bytes) -> None:
        if self.answer_pings:
            super().onPing(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(Refused(reason or "connection closed during the handshake"))
        if not self.closed.called:
            self.closed.callback(code)

    def send(self, event: dict[str, Any]) -> None:
        self.sendMessage(dumps(event), isBinary=False)

    def next_event(self, clock: IReactorTime, timeout: float = 10.0,
                   ) -> defer.Deferred[dict[str, Any]]:
        """The next event, failing with ``defer.TimeoutError`` after ``timeout``."""
        return self.events.get().addTimeout(timeout, clock)

    def close(self) -> defer.Deferred[int | None]:
        if not self.closed.called:
            self.sendClose(1000)
        return self.closed


@defer.inlineCallbacks
def connect_ws(reactor: Any, host: str, port: int, query: str = "",
               headers: dict[str, str] | None = None, timeout: float = 10.0,
               answer_pings: bool = True) -> Any:
    """Open ``ws://host:port/ws?query``; fires with the open :class:`ChatClient`
    or fails with :class:`Refused`."""
    url = f"ws://{host}:{port}/ws" + (f"?{query}" if query else "")
    factory = WebSocketClientFactory(url, headers=headers or {}, reactor=reactor)
    factory.protocol = ChatClient
    # close at once when the server does, without waiting for our own timers
    factory.setProtocolOptions(closeHandshakeTimeout=2)
    proto = yield TCP4ClientEndpoint(reactor, host, port, timeout=timeout).connect(factory)
    proto.answer_pings = answer_pings
    yield proto.opened.addTimeout(timeout, reactor)
    return proto
