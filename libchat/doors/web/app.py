"""The one web listener (``--web``): page, WebSocket, REST, OpenAPI, metrics, health.

:func:`build` wires the web front doors to a router; ``tap.py`` only listens
with the resulting site. Every piece receives the reactor (the clock) here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from libchat.doors.memory_api import json_response
from libchat.interfaces import IRouter, IRouterStats
from libchat.doors.web.auth import Authenticator
from libchat.doors.web.gateway import WebGateway
from libchat.doors.web.metrics import Metrics
from libchat.doors.web.rest import ChatAPI
from libchat.doors.web.ws import (
    DEFAULT_MAX_PER_USER,
    DEFAULT_PING,
    DEFAULT_PONG,
    DEFAULT_RATE,
    ChatSocketFactory,
    ConnectionRegistry,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"
OPENAPI = HERE / "openapi.json"
# the page's files, served by name only (no directory walking, no listings)
STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".css": b"text/css; charset=utf-8",
                ".js": b"text/javascript; charset=utf-8"}

# The page loads only its own files; scripts may open WebSockets to this host.
PAGE_HEADERS = {
    b"Content-Security-Policy": b"default-src 'self'; connect-src 'self' ws: wss:; "
                                b"img-src 'self' data:; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-cache",
}


@attrs.frozen
class WebSettings:
    """The ``--web`` family of options (defaults: docs/web.md and docs/web.md)."""

    secret: bytes | None = None
    max_frame: int = 4 * 1024 * 1024
    rate: float = DEFAULT_RATE
    max_per_user: int = DEFAULT_MAX_PER_USER
    ping: float = DEFAULT_PING
    pong: float = DEFAULT_PONG


class WebApp:
    app = Klein()

    def __init__(self, gateway: WebGateway, auth: Authenticator, registry: ConnectionRegistry,
                 ws: ChatSocketFactory, rest: ChatAPI, metrics: Metrics,
                 hooks: IResource | None = None) -> None:
        self.gateway = gateway
        self.hooks = hooks  # the platform callbacks (libchat.doors.platforms), if any app
        self.auth = auth
        self.registry = registry
        self.ws_resource = WebSocketResource(ws)
        self.rest_resource = rest.app.resource()
        self.metrics = metrics
        self.postoffice: Any = None  # the post-office hub, when --postoffice is on
        self.node: Any = None  # the cluster node, with --redis
        self.static = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix])
                       for p in STATIC.iterdir() if p.suffix in STATIC_TYPES}
        self.openapi = OPENAPI.read_bytes()

    def resource(self) -> IResource:
        return self.app.resource()

    @app.route("/", methods=["GET"])
    def page(self, request: IRequest) -> bytes:
        return self.static_file(request, "index.html")

    @app.route("/operator", methods=["GET"])
    def operator_page(self, request: IRequest) -> bytes:
        """The operator console (docs/operators.md); the same headers as the chat page."""
        return self.static_file(request, "operator.html")

    @app.route("/static/<string:name>", methods=["GET"])
    def static_file(self, request: IRequest, name: str) -> bytes:
        if name not in self.static:
            return json_response(request, 404, {"code": "NOT_FOUND", "message": "no such file"})
        body, content_type = self.static[name]
        for header, value in PAGE_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader(b"Content-Type", content_type)
        return body

    @app.route("/ws")
    def websocket(self, request: IRequest) -> IResource:
        return self.ws_resource

    @app.route("/api/chat/", branch=True)
    def rest(self, request: IRequest) -> IResource:
        return self.rest_resource

    @app.route("/hooks/", branch=True)
    def platform_hooks(self, request: IRequest) -> Any:
        if self.hooks is None:
            return self.not_found(request)
        return self.hooks

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return self.openapi

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.render()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return json_response(request, 200, {
            "ok": True, "auth": "dev" if self.auth.dev_mode else "jwt",
            "websockets": self.registry.count(),
            **({"postoffice": self.postoffice.health()} if self.postoffice is not None else {}),
            **({"cluster": self.node.health()} if self.node is not None else {})})

    @app.route("/", branch=True)
    def not_found(self, request: IRequest) -> bytes:
        return json_response(request, 404, {"code": "NOT_FOUND", "message": "no such resource"})


def build(router: IRouter, clock: IReactorTime, settings: WebSettings,
          now: Callable[[], float] | None = None, agents: Any = None,
          hooks: IResource | None = None, collectors: tuple[Any, ...] = (),
          postoffice: Any = None, desk: Any = None, node: Any = None,
          desk_figures: Any = None) -> WebApp:
    """The web front doors of ``router``; the gateway is attached to it. The
    metrics read the router as :class:`~libchat.interfaces.IRouterStats`."""
    now = now or clock.seconds
    gateway = WebGateway(router, clock)
    if node is not None:  # a cluster node: events reach every node's sockets
        node.serve_web(gateway)
        collectors += (node.collector(),)
    router.attach(gateway)
    auth = Authenticator(settings.secret)
    registry = ConnectionRegistry(settings.max_per_user)
    ws = ChatSocketFactory(gateway, auth, registry, clock, rate=settings.rate,
                           max_frame=settings.max_frame, ping=settings.ping, pong=settings.pong,
                           desk=desk)
    rest = ChatAPI(gateway, auth, now, max_body=settings.max_frame, rate=settings.rate)
    if postoffice is not None:
        collectors += (postoffice.collector(),)
    if desk is not None:
        from libchat.runtimes.operators.figures import DeskFigures
        # the runtime's figures (a cluster node's door desk is a proxy)
        collectors += (DeskFigures(desk_figures if desk_figures is not None else desk),)
    metrics = Metrics(IRouterStats(router), now, connections=registry.count,
                      users=registry.users, waiting=gateway.waiting, agents=agents,
                      collectors=collectors)
    web = WebApp(gateway, auth, registry, ws, rest, metrics, hooks)
    web.postoffice = postoffice  # the hub (health()) when --postoffice is on
    web.node = node  # the cluster node (health()) with --redis
    return web
