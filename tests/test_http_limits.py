"""Request bodies are bounded while they arrive, on every site tap builds
(memory API and web): over the limit is 413 before the body is read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.web.resource import Resource

from libchat.doors.http import bounded_site
from libchat.doors.memory_api import MAX_BODY
from libchat.protocol.wire import DEFAULT_MAX_FRAME

from .serving import Server

T = 10.0


class Raw(protocol.Protocol):
    """A client that writes what it is told and keeps what it is answered."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.received)


@defer.inlineCallbacks
def stalled(port: int, head: bytes, body: bytes = b"") -> Any:
    """Send a request head (and maybe part of a body), then nothing more;
    the server's whole answer once it closes (bounded)."""
    raw = Raw()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
    transport: Any = raw.transport
    transport.write(head + body)
    try:
        answer = yield raw.closed.addTimeout(T, reactor)
    finally:
        transport.abortConnection()
    return answer


def status_and_body(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{extra}\r\n").encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, "--web", "tcp:0:interface=127.0.0.1").start()
    yield s
    pytest_twisted.blockon(s.stop())


@pytest.mark.parametrize("role, path, limit", [
    ("api", "/memory", MAX_BODY),
    ("web", "/api/chat/sessions", DEFAULT_MAX_FRAME),
])
@pytest_twisted.inlineCallbacks
def test_a_content_length_over_the_limit_is_413_before_the_body(
        server: Server, role: str, path: str, limit: int) -> Any:
    answer = yield stalled(server.port(role),
                           head(path, f"Content-Length: {limit + 1}\r\n"), b"{")
    assert status_and_body(answer) == (413, {"code": "MSG_TOO_LARGE",
                                             "message": f"body over {limit} bytes"})


@pytest.mark.parametrize("role, path", [("api", "/memory"), ("web", "/api/chat/sessions")])
@pytest_twisted.inlineCallbacks
def test_expect_100_continue_over_the_limit_gets_only_the_413(
        server: Server, role: str, path: str) -> Any:
    answer = yield stalled(server.port(role), head(
        path, "Content-Length: 999999999\r\nExpect: 100-continue\r\n"))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer


@pytest_twisted.inlineCallbacks
def test_a_chunked_body_is_cut_off_at_the_limit(server: Server) -> Any:
    chunk = b"x" * (MAX_BODY // 2)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3))  # no last chunk
    answer = yield stalled(server.port("api"),
                           head("/memory", "Transfer-Encoding: chunked\r\n"), body)
    assert status_and_body(answer)[0] == 413


@pytest_twisted.inlineCallbacks
def test_a_body_within_the_limit_reaches_the_resource(server: Server) -> Any:
    body = b'{"event_type": 3000}'
    raw = Raw()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("api")), raw)
    transport: Any = raw.transport
    transport.write(head("/memory", f"Content-Length: {len(body)}\r\nConnection: close\r\n")
                        + body)
    answer = yield raw.closed.addTimeout(T, reactor)
    assert answer.startswith(b"HTTP/1.1 401 ")  # read, parsed, refused: it has no token


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        return b"%d" % len(request.content.read())


@pytest_twisted.inlineCallbacks
def test_bounded_site_lets_a_chunked_body_at_the_limit_through_and_cuts_one_past_it() -> Any:
    port: Any = reactor.listenTCP(0, bounded_site(Echo(), 10),  # type: ignore[arg-type]
                                  interface="127.0.0.1")
    try:
        ok = yield stalled(port.getHost().port, head(
            "/", "Transfer-Encoding: chunked\r\nConnection: close\r\n"),
            b"a\r\n0123456789\r\n0\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"\r\n\r\n10")
        cut = yield stalled(port.getHost().port, head("/", "Transfer-Encoding: chunked\r\n"),
                            b"a\r\n0123456789\r\n1\r\nX\r\n")
        assert status_and_body(cut) == (413, {"code": "MSG_TOO_LARGE",
                                              "message": "body over 10 bytes"})
    finally:
        yield port.stopListening()


def test_access_log_lines_leave_the_query_string_out() -> None:
    """A ?token= or ?secret= must never reach a log (docs/security.md)."""
    from twisted.web.test.requesthelper import DummyRequest

    from libchat.doors.http import access_line

    request = DummyRequest([b"token"])
    request.uri = b"/token?appid=acme&secret=very-secret-value"
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.code = 200
    request.sentLength = 10
    line = access_line("[02/Dec/2026:21:00:00 +0000]", request)
    assert '"GET /token HTTP/1.1" 200 10' in line and "very-secret" not in line
