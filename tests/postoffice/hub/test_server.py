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
