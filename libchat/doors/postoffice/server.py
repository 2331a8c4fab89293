"""The listener: ``GET /token`` and the WebSocket upgrade with every check
(400/401/403/409/503) made in ``onConnect``, before the upgrade."""
from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from libchat.doors.http import bounded_site
from libchat.doors.postoffice.hub import Hub
from libchat.doors.postoffice.tokens import Tokens, Unauthorized
from libchat.doors.web.ws import RateLimiter

PING_INTERVAL = 25


class PostSocket(WebSocketServerProtocol):
    client_id = ""
    factory: "HubFactory"

    def onConnect(self, request: ConnectionRequest) -> None:
        f = self.factory
        hub = f.hub
        q = request.params

        def deny(code: int, reason: str) -> None:
            hub.refuse(str(code))
            raise ConnectionDeny(code, reason)

        client_id = (q.get("clientID") or [""])[0]
        if not client_id:
            deny(400, "clientID is required")
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else \
            (q.get("token") or [""])[0]
        if not token:
            deny(401, "a token is required")
        try:
            app = f.tokens.check(token)
        except Unauthorized as e:
            deny(401, str(e))
        if hub.internal(client_id) or not app.may_use(client_id):
            deny(403, "this app may not use that clientID")
        start: float | None = None
        try:
            start = float((q.get("startTime") or [""])[0])
        except ValueError:
            start = None
        if hub.older(client_id, start):
            deny(409, "a newer connection of this clientID is live")
        if client_id not in hub.conns and len(hub.conns) >= f.max_connections:
            deny(503, "too many connections")
        self.client_id = client_id
        self._start = start
        self._limiter = RateLimiter(f.rate, f.hub.clock.seconds)

    def onOpen(self) -> None:
        self.factory.hub.attach(self, self._start)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.send(json.dumps({"type": "error", "code": "BAD_MESSAGE",
                                  "error": "envelopes are text frames"}))
            return
        if not self._limiter.allow():
            self.send(json.dumps({"type": "error", "code": "BAD_MESSAGE",
                                  "error": "rate limit exceeded"}))
            return
        self.factory.hub.receive(self, payload.decode("utf-8", "replace"))

    def send(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), False)

    def replaced(self, reason: str) -> None:
        self.sendClose(4000, reason)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self.client_id:
            self.factory.hub.detach(self)


class HubFactory(WebSocketServerFactory):
    protocol = PostSocket  # type: ignore[assignment]

    def __init__(self, hub: Hub, tokens: Tokens, max_connections: int = 20000,
                 rate: float = 200.0, max_frame: int = 1 << 20) -> None:
        super().__init__()
        self.hub = hub
        self.tokens = tokens
        self.max_connections = max_connections
        self.rate = rate
        self.setProtocolOptions(autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_INTERVAL,
                                maxMessagePayloadSize=max_frame,
                                maxFramePayloadSize=max_frame)


class TokenResource(resource.Resource):
    isLeaf = True

    def __init__(self, tokens: Tokens) -> None:
        super().__init__()
        self.tokens = tokens

    def render_GET(self, request: IRequest) -> bytes:
        args = request.args or {}
        appid = (args.get(b"appid") or [b""])[0].decode("utf-8", "replace")
        secret = (args.get(b"secret") or [b""])[0].decode("utf-8", "replace")
        request.setHeader(b"content-type", b"application/json")
        try:
            body = self.tokens.issue(appid, secret)
        except Unauthorized as e:
            request.setResponseCode(401)
            body = {"error": str(e)}
        return json.dumps(body).encode()


class Root(resource.Resource):
    """``/token`` is plain HTTP; every other path upgrades."""

    def __init__(self, factory: HubFactory) -> None:
        super().__init__()
        self.ws = WebSocketResource(factory)
        self.token = TokenResource(factory.tokens)

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        if path == b"token" and len(request.postpath) == 0:
            return self.token
        return self.ws

    def render(self, request: IRequest) -> bytes:
        return self.ws.render(request)


def site(factory: HubFactory, max_body: int = 64 * 1024) -> server.Site:
    """The hub's listener: ``/token`` and upgrades have no body worth reading."""
    return bounded_site(Root(factory), max_body)
