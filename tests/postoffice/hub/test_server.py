"""The listener without a network: the upgrade checks on fuzzed query strings
and headers, and ``/token`` through StubTreq."""
from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from autobahn.websocket.types import ConnectionDeny
from hypothesis import given, settings, strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock

from libchat.doors.postoffice.hub import Hub
from libchat.doors.postoffice.server import HubFactory, PostSocket, Root
from libchat.doors.postoffice.tokens import App, Tokens

APPS = {"acme": App("acme", "s3cret", ("/service/acme/*",))}


def factory(max_connections: int = 10) -> HubFactory:
    clock = Clock()
    clock.advance(time.time())
    return HubFactory(Hub(clock), Tokens(APPS, clock.seconds), max_connections=max_connections)


class Request:
    def __init__(self, params: dict[str, list[str]], headers: dict[str, str]) -> None:
        self.params = params
        self.headers = headers


def upgrade(f: HubFactory, params: dict[str, list[str]], headers: dict[str, str] | None = None
            ) -> int:
    """The HTTP status onConnect answers (101 when it lets the upgrade go on)."""
    sock = PostSocket()
    sock.factory = f
    try:
        sock.onConnect(Request(params, headers or {}))  # type: ignore[arg-type]
    except ConnectionDeny as e:
        return e.code
    return 101


def test_checks_in_order() -> None:
    f = factory()
    good = f.tokens.issue("acme", "s3cret")["token"]
    assert upgrade(f, {}) == 400
    assert upgrade(f, {"clientID": ["/service/acme/a"]}) == 401
    assert upgrade(f, {"clientID": ["/service/acme/a"], "token": ["x"]}) == 401
    assert upgrade(f, {"clientID": ["/service/x/a"], "token": [good]}) == 403
    assert upgrade(f, {"clientID": ["/service/acme/a"]}, {"authorization": f"Bearer {good}"}) == 101
    assert f.hub.refusals == {"400": 1, "401": 2, "403": 1}


def test_expired_token_is_refused() -> None:
    f = factory()
    good = f.tokens.issue("acme", "s3cret")["token"]
    f.hub.clock.advance(f.tokens.ttl + 1)  # type: ignore[attr-defined]
    assert upgrade(f, {"clientID": ["/service/acme/a"], "token": [good]}) == 401


def test_over_max_connections_is_503() -> None:
    f = factory(max_connections=0)
    good = f.tokens.issue("acme", "s3cret")["token"]
    assert upgrade(f, {"clientID": ["/service/acme/a"], "token": [good]}) == 503


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["clientID", "token", "startTime", "x"]),
                       st.lists(st.text(), max_size=2)),
       st.dictionaries(st.sampled_from(["authorization", "x-other"]), st.text()))
def test_any_query_string_gets_an_answer(params: dict[str, list[str]],
                                         headers: dict[str, str]) -> None:
    assert upgrade(factory(), params, headers) in (101, 400, 401, 403, 409, 503)


@pytest_twisted.inlineCallbacks
def test_token_endpoint_good_and_bad() -> Any:
    client = StubTreq(Root(factory()))
    r = yield client.get("http://hub/token", params={"appid": "acme", "secret": "s3cret"})
    body = yield r.json()
    assert r.code == 200 and set(body) == {"expires", "token", "ttl"}
    r = yield client.get("http://hub/token", params={"appid": "acme", "secret": "s3creT"})
    assert r.code == 401
    r = yield client.get("http://hub/token")
    assert r.code == 401


@settings(max_examples=100, deadline=None)
@given(st.text(), st.text())
def test_token_endpoint_any_query_answered(appid: str, secret: str) -> None:
    client = StubTreq(Root(factory()))
    d = client.get("http://hub/token", params={"appid": appid, "secret": secret})
    codes: list[int] = []
    d.addCallback(lambda r: codes.append(r.code))
    client.flush()
    assert codes and codes[0] in (200, 401)


@pytest_twisted.inlineCallbacks
def test_the_hub_pings_every_25_s_and_closes_a_connection_that_stops_answering() -> Any:
    """The factory's settings (25 s, as section 12 says), then the behaviour
    on a real loopback socket with the interval shortened: a client that
    completes the upgrade but never answers a ping is closed."""
    import socket

    from twisted.internet import defer, reactor, task
    from twisted.internet.endpoints import TCP4ServerEndpoint

    from libchat.doors.postoffice.server import PING_INTERVAL, site

    f = factory()
    assert PING_INTERVAL == 25
    assert (f.autoPingInterval, f.autoPingTimeout) == (25, 25)
    f.hub.clock = reactor  # real timers for the live part
    f.setProtocolOptions(autoPingInterval=0.2, autoPingTimeout=0.2)
    token = f.tokens.issue("acme", "s3cret")["token"]

    @defer.inlineCallbacks
    def run() -> Any:
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site(f))
        raw = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        try:
            raw.sendall(("GET /ws?clientID=/service/acme/mute HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n"
                         f"Authorization: Bearer {token}\r\n\r\n").encode())
            raw.setblocking(False)
            got, deadline = b"", reactor.seconds() + 5
            while reactor.seconds() < deadline:
                yield task.deferLater(reactor, 0.05, lambda: None)
                try:
                    chunk = raw.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:  # closed abortively: closed all the same
                    chunk = b""
                if not chunk:
                    break  # the hub closed the silent connection
                got += chunk
            assert got.startswith(b"HTTP/1.1 101"), got[:80]
            assert b"\x89" in got, "a ping frame was sent"
            assert not chunk, "the connection was closed"
        finally:
            raw.close()
            yield port.stopListening()
    yield run()
