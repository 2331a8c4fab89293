"""The REST session API end to end: a real ``twistd libchat`` and real Node programs."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
import treq
from twisted.internet import defer, reactor

from libchat.protocol import codes
from libchat.doors.web.auth import mint
from libchat.doors.web.client import connect_ws

from .conftest import SECRET, Server


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET.encode(), user)}"}


@defer.inlineCallbacks
def call(server: Server, method: str, path: str, user: str | None = None,
         body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    """(status, JSON body) of one request."""
    h = dict(headers or {})
    if user is not None:
        h.update(auth(user))
    if body is not None:
        kw["json"] = body
    response = yield treq.request(method, server.url(path), headers=h, **kw)
    return response.code, (yield response.json())


@pytest_twisted.inlineCallbacks
def test_session_round_trip_with_a_pinned_intent(jwt_server: Server) -> Any:
    status, session = yield call(jwt_server, "POST", "/api/chat/sessions", "ursula",
                                 {"intent": "echo"})
    assert status == 201 and session["user_id"] == "ursula"
    sid = session["session_id"]
    base = f"/api/chat/sessions/{sid}"
    # no keyword names echo: the pinned intent decides
    status, posted = yield call(jwt_server, "POST", f"{base}/messages", "ursula",
                                {"content": "good morning"})
    assert status == 202 and posted["seq"] == 1
    status, got = yield call(jwt_server, "GET", f"{base}/messages", "ursula",
                             params={"after": "1", "wait": "20"})
    assert status == 200
    [reply] = got["messages"]
    assert reply["event_type"] == codes.REPLY and reply["seq"] == 2
    assert reply["messages"] == {"content": "echo: good morning", "attachments": []}
    assert reply["program"] == "echo"
    status, closed = yield call(jwt_server, "POST", f"{base}/close", "ursula")
    assert (status, closed) == (200, {"ok": True})
    status, got = yield call(jwt_server, "GET", f"{base}/messages", "ursula")
    assert [e["event_type"] for e in got["messages"]] == [1001, 2001, 2002]
    assert got["messages"][0]["message_id"] == posted["message_id"]
    assert got["messages"][-1]["reason"] == codes.CLIENT_CLOSED


@pytest_twisted.inlineCallbacks
def test_long_poll_returns_as_soon_as_the_reply_exists(jwt_server: Server) -> Any:
    _, session = yield call(jwt_server, "POST", "/api/chat/sessions", "lena")
    base = f"/api/chat/sessions/{session['session_id']}/messages"
    _, posted = yield call(jwt_server, "POST", base, "lena", {"content": "echo quick"})
    started = time.monotonic()
    status, got = yield call(jwt_server, "GET", base, "lena",
                             params={"after": str(posted["seq"]), "wait": "25"})
    elapsed = time.monotonic() - started
    assert status == 200 and got["messages"][0]["messages"]["content"] == "echo: echo quick"
    assert elapsed < 10, f"long-poll took {elapsed:.1f}s of its 25s"
    # with nothing newer, it waits the time out and answers an empty list
    started = time.monotonic()
    status, got = yield call(jwt_server, "GET", base, "lena",
                             params={"after": str(got["messages"][-1]["seq"]), "wait": "1"})
    assert (status, got) == (200, {"messages": []})
    assert time.monotonic() - started >= 0.9


@pytest_twisted.inlineCallbacks
def test_a_long_poll_wakes_for_a_message_posted_by_another_client(jwt_server: Server) -> Any:
    _, session = yield call(jwt_server, "POST", "/api/chat/sessions", "wes",
                            {"intent": "echo"})
    base = f"/api/chat/sessions/{session['session_id']}/messages"
    poll = call(jwt_server, "GET", base, "wes", params={"after": "0", "wait": "25"})
    yield call(jwt_server, "POST", base, "wes", {"content": "hi"})
    status, got = yield poll
    assert status == 200 and got["messages"][0]["event_type"] == codes.USER_MESSAGE


@pytest_twisted.inlineCallbacks
def test_rest_replies_are_pushed_to_the_users_websockets(jwt_server: Server) -> Any:
    ws = yield connect_ws(reactor, "127.0.0.1", jwt_server.web,
                          f"token={mint(SECRET.encode(), 'vic')}")
    _, session = yield call(jwt_server, "POST", "/api/chat/sessions", "vic")
    yield call(jwt_server, "POST", f"/api/chat/sessions/{session['session_id']}/messages",
               "vic", {"content": "echo both ways"})
    event = yield ws.next_event(reactor)
    assert event["dialog_id"] == session["session_id"] and event["seq"] == 2
    assert event["messages"]["content"] == "echo: echo both ways"
    yield ws.close()


@pytest_twisted.inlineCallbacks
def test_errors_are_json_with_the_contracts_statuses(jwt_server: Server) -> Any:
    _, session = yield call(jwt_server, "POST", "/api/chat/sessions", "owner")
    base = f"/api/chat/sessions/{session['session_id']}"
    cases = [
        ("POST", "/api/chat/sessions", None, None, {}, 401),
        ("POST", "/api/chat/sessions", None, None,
         {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("POST", "/api/chat/sessions", None, None, {"headers": {"X-User-Id": "owner"}}, 401),
        ("GET", f"{base}/messages", "stranger", None, {}, 404),  # another user's session
        ("POST", f"{base}/messages", "stranger", {"content": "x"}, {}, 404),
        ("POST", f"{base}/close", "stranger", None, {}, 404),
        ("GET", "/api/chat/sessions/nope/messages", "owner", None, {}, 404),
        ("POST", f"{base}/messages", "owner", {"no": "content"}, {}, 400),
        ("POST", f"{base}/messages", "owner", None, {"data": b"{not json"}, 400),
        ("POST", f"{base}/messages", "owner", {"content": "x" * 70_000}, {}, 413),
        ("GET", f"{base}/messages", "owner", None, {"params": {"after": "-1"}}, 400),
        ("GET", f"{base}/messages", "owner", None, {"params": {"wait": "soon"}}, 400),
        ("POST", "/api/chat/sessions", "owner", {"intent": "Bad Intent"}, {}, 400),
    ]
    for method, path, user, body, kw, expected in cases:
        status, error = yield call(jwt_server, method, path, user, body, **kw)
        assert status == expected, (method, path, user, body, kw, error)
        assert set(error) == {"code", "message"} and error["message"]


@pytest_twisted.inlineCallbacks
def test_posting_over_the_rate_answers_429(jwt_server: Server) -> Any:
    _, session = yield call(jwt_server, "POST", "/api/chat/sessions", "quick",
                            {"intent": "echo"})
    base = f"/api/chat/sessions/{session['session_id']}/messages"
    # a burst far over the bucket (--ws-rate 5), all sent in one reactor turn:
    # 30 posts need ~5 s of refill, so some are refused whatever the timing
    answers = yield defer.gatherResults([
        call(jwt_server, "POST", base, "quick", {"content": str(i)}) for i in range(30)])
    statuses = [status for status, _ in answers]
    for status, body in answers:
        assert status in (202, 429), (status, body)
        if status == 429:
            assert body["code"] == codes.RATE_LIMIT
    assert 202 in statuses and 429 in statuses


@pytest_twisted.inlineCallbacks
def test_development_mode_names_the_user_with_x_user_id(dev_server: Server) -> Any:
    status, session = yield call(dev_server, "POST", "/api/chat/sessions",
                                 headers={"X-User-Id": "devi"})
    assert (status, session["user_id"]) == (201, "devi")
    status, _ = yield call(dev_server, "POST", "/api/chat/sessions")
    assert status == 401
    status, health = yield call(dev_server, "GET", "/healthz")
    assert status == 200 and health["ok"] is True and health["auth"] == "dev"
    dev_server.drain()
    assert any("DEVELOPMENT MODE" in line for line in dev_server.lines)
