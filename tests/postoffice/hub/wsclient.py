"""A real WebSocket client (autobahn, in the test reactor) for the hub tests."""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, endpoints, reactor


class Refused(Exception):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status


class Client(WebSocketClientProtocol):
    factory: "Factory"

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.inbox.put(payload.decode())

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.close_reason = reason
        if not self.factory.opened.called:
            m = re.search(r"\[(\d{3})\]", str(reason))
            self.factory.opened.errback(Refused(int(m.group(1)) if m else None, str(reason)))
        if not self.factory.closed.called:
            self.factory.closed.callback((code, reason))

    def post(self, **envelope: Any) -> None:
        self.sendMessage(json.dumps(envelope, ensure_ascii=False).encode(), False)

    def next(self, timeout: float = 5.0) -> "defer.Deferred[Any]":
        d = self.factory.inbox.get()
        d.addTimeout(timeout, reactor)
        return d.addCallback(json.loads)


class Factory(WebSocketClientFactory):
    protocol = Client  # type: ignore[assignment]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.opened: defer.Deferred[Client] = defer.Deferred()
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.inbox: defer.DeferredQueue[str] = defer.DeferredQueue()
        self.close_reason: Any = None


@defer.inlineCallbacks
def connect(port: int, client_id: str | None, token: str | None = None,
            bearer: bool = True, **query: Any) -> Any:
    """Open a connection; fails with :class:`Refused` (the HTTP status) when refused."""
    params = dict(query)
    if client_id is not None:
        params["clientID"] = client_id
    headers = {}
    if token is not None:
        if bearer:
            headers["Authorization"] = f"Bearer {token}"
        else:
            params["token"] = token
    url = f"ws://127.0.0.1:{port}/ws?{urlencode(params)}"
    factory = Factory(url, headers=headers)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    yield endpoint.connect(factory)
    factory.opened.addTimeout(5, reactor)
    client = yield factory.opened
    return client
