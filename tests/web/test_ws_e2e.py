"""``/ws`` end to end: a real ``twistd libchat`` (JWT mode) and real Node programs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

from libchat.protocol import codes
from libchat.tools.client import connect as connect_frame
from libchat.doors.web.auth import mint
from libchat.doors.web.client import ChatClient, Refused, connect_ws

from .conftest import SECRET, Server

UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def token(user: str, **kw: Any) -> str:
    return mint(SECRET.encode(), user, **kw)


def dialog_id() -> str:
    return "d-" + uuid.uuid4().hex[:12]


def open_ws(server: Server, user: str, **kw: Any) -> defer.Deferred[ChatClient]:
    return connect_ws(reactor, "127.0.0.1", server.web, f"token={token(user)}", **kw)


def message(dialog: str, content: str, message_id: str | None = None) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "message_id": message_id or uuid.uuid4().hex,
            "messages": {"content": content, "attachments": []}}


@defer.inlineCallbacks
def events_until(client: ChatClient, done: Any, timeout: float = 15.0) -> Any:
    """Events until one for which ``done(event)`` is true (included)."""
    got = []
    while True:
        event = yield client.next_event(reactor, timeout)
        got.append(event)
        if done(event):
            return got


@pytest_twisted.inlineCallbacks
def test_push_reaches_every_socket_of_the_user_and_no_other_user(jwt_server: Server) -> Any:
    a1 = yield open_ws(jwt_server, "alice")
    a2 = yield open_ws(jwt_server, "alice")
    bob = yield open_ws(jwt_server, "bob")
    d = dialog_id()
    # the frame's user_id is ignored: the token says alice
    a1.send({**message(d, "echo hello there"), "user_id": "bob"})
    for client in (a1, a2):
        event = yield client.next_event(reactor)
        assert event["event_type"] == codes.REPLY
        assert event["messages"]["content"] == "echo: echo hello there"
        assert (event["dialog_id"], event["user_id"], event["program"]) == (d, "alice", "echo")
        assert event["seq"] == 2  # the user's 1001 was 1
    # bob's own dialog answers first: nothing of alice's reached him before it
    b = dialog_id()
    bob.send(message(b, "echo mine"))
    event = yield bob.next_event(reactor)
    assert (event["dialog_id"], event["messages"]["content"]) == (b, "echo: echo mine")
    # and bob cannot write into, nor replay, alice's dialog
    bob.send(message(d, "echo intrude"))
    bob.send({"event_type": 1003, "dialog_id": d, "after": 0})
    for _ in range(2):
        event = yield bob.next_event(reactor)
        assert (event["event_type"], event["code"]) == (codes.ERROR, codes.BAD_REQUEST)
    assert a1.events.pending == [] and a2.events.pending == []
    for client in (a1, a2, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_bad_expired_or_missing_token_is_refused_with_401(jwt_server: Server) -> Any:
    for query in ["token=not-a-jwt", f"token={mint(b'another-secret-of-32-bytes-000000', 'al')}",
                  f"token={token('alice', ttl=-10)}", "user_id=alice", ""]:
        response = yield treq.get(jwt_server.url(f"/ws?{query}"), headers=UPGRADE)
        assert response.code == 401, query
        yield response.content()
    with pytest.raises(Refused):
        yield connect_ws(reactor, "127.0.0.1", jwt_server.web, "token=bad")
    # the header works as well as the query string
    client = yield connect_ws(reactor, "127.0.0.1", jwt_server.web,
                              headers={"Authorization": f"Bearer {token('carol')}"})
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_each_message_over_the_rate_gets_rate_limit_and_is_not_processed(
        jwt_server: Server) -> Any:
    """A burst far over the bucket, sent in one reactor turn: the first
    ``burst`` (5) are accepted (a new socket's bucket is full), and most of the
    rest refused; which of the rest get through depends on timing, so the
    assertions only use what does not: each message gets exactly one answer,
    a refused one is never processed. (The bucket arithmetic itself is
    unit-tested on a Clock in test_ws.py.)"""
    client = yield open_ws(jwt_server, "rita")
    d = dialog_id()
    ids = [f"m{i}" for i in range(60)]
    for mid in ids:  # --ws-rate 5: a burst of 5, then 5 per second; 60 need ~11 s
        client.send(message(d, f"echo {mid}", mid))
    limited, replied = [], []
    while len(limited) + len(replied) < len(ids):
        event = yield client.next_event(reactor)
        if event["event_type"] == codes.ERROR:
            assert event["code"] == codes.RATE_LIMIT and event["retry"] is True
            limited.append(event["message_id"])
        else:
            assert event["event_type"] == codes.REPLY
            replied.append(event["messages"]["content"].removeprefix("echo: echo "))
    assert sorted(limited + replied) == sorted(ids)  # one answer each
    assert set(ids[:5]) <= set(replied)  # the full bucket
    assert limited
    # not processed: the transcript holds only the accepted ones (asked on a
    # second socket of the same user: its bucket is its own, and full)
    other = yield open_ws(jwt_server, "rita")
    other.send({"event_type": 1003, "dialog_id": d})
    entries = yield events_until(other, lambda e: e["seq"] == 2 * len(replied))
    assert {e["message_id"] for e in entries if e["event_type"] == 1001} == set(replied)
    yield client.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_a_message_over_max_frame_gets_msg_too_large_and_the_socket_closes(
        jwt_server: Server) -> Any:
    client = yield open_ws(jwt_server, "sam")
    client.send(message(dialog_id(), "x" * 70_000))  # --max-frame 65536
    event = yield client.next_event(reactor)
    assert (event["event_type"], event["code"]) == (codes.ERROR, codes.MSG_TOO_LARGE)
    code = yield client.closed.addTimeout(10, reactor)
    assert code == 1009


@pytest_twisted.inlineCallbacks
def test_reconnecting_client_replays_exactly_what_it_missed(jwt_server: Server) -> Any:
    """Mid-dialog disconnect: countdown keeps replying in the background; the
    client comes back, sends 1003 after its last seq, and gets the rest."""
    client = yield open_ws(jwt_server, "rob")
    d = dialog_id()
    client.send(message(d, "countdown 2"))
    seen = yield events_until(client, lambda e: e["event_type"] == codes.ENDED)
    assert [e["event_type"] for e in seen] == [codes.REPLY, codes.ENDED]
    assert seen[1]["reason"] == codes.COMPLETED
    last = seen[-1]["seq"]
    yield client.close()
    # away: wait (REST long-poll, same user) until the program said liftoff
    headers = {"Authorization": f"Bearer {token('rob')}"}
    after = last
    while True:
        r = yield treq.get(jwt_server.url(f"/api/chat/sessions/{d}/messages"),
                           params={"after": str(after), "wait": "10"}, headers=headers)
        body = yield r.json()
        assert r.code == 200 and body["messages"], body
        after = body["messages"][-1]["seq"]
        if body["messages"][-1]["messages"]["content"] == "liftoff!":
            break
    back = yield open_ws(jwt_server, "rob")
    back.send({"event_type": 1003, "dialog_id": d, "after": last})
    missed = yield events_until(back, lambda e: e.get("seq") == after)
    assert [e["seq"] for e in missed] == list(range(last + 1, after + 1))
    assert [e["messages"]["content"] for e in missed] == ["2", "1", "liftoff!"]
    assert all(e["background"] is True and e["program"] == "countdown" for e in missed)
    # exactly as first sent: the same events a live socket got
    back.send({"event_type": 1003, "dialog_id": d, "after": 0})
    everything = yield events_until(back, lambda e: e.get("seq") == after)
    assert everything[1:3] == seen
    assert back.events.pending == []
    yield back.close()


@pytest_twisted.inlineCallbacks
def test_a_client_that_does_not_answer_pings_is_closed(jwt_server: Server) -> Any:
    live = yield open_ws(jwt_server, "pat")
    deaf = yield open_ws(jwt_server, "pat", answer_pings=False)
    yield deaf.closed.addTimeout(10, reactor)  # --ws-ping 1, --ws-pong 2
    # the one that answers is still served
    d = dialog_id()
    live.send(message(d, "echo still here"))
    event = yield live.next_event(reactor)
    assert event["messages"]["content"] == "echo: echo still here"
    yield live.close()


@pytest_twisted.inlineCallbacks
def test_connections_per_user_are_capped_with_429(jwt_server: Server) -> Any:
    clients = []
    for _ in range(3):  # --ws-max-per-user 3
        clients.append((yield open_ws(jwt_server, "max")))
    response = yield treq.get(jwt_server.url(f"/ws?token={token('max')}"), headers=UPGRADE)
    assert response.code == 429
    yield response.content()
    other = yield open_ws(jwt_server, "other")  # another user is not affected
    yield clients.pop().close()
    clients.append((yield open_ws(jwt_server, "max")))  # a freed slot is usable
    for client in [*clients, other]:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_frame_dialogs_stay_on_the_frame_connection(jwt_server: Server) -> Any:
    web = yield open_ws(jwt_server, "fay")
    front = yield connect_frame(reactor, f"tcp:127.0.0.1:{jwt_server.ports['front']}")
    d = dialog_id()
    front.send({**message(d, "echo over frames"), "user_id": "fay"})
    event = yield front.next_event(reactor)
    assert event["messages"]["content"] == "echo: echo over frames"
    web.send(message(d, "echo hijack"))
    web.send({"event_type": 1003, "dialog_id": d})
    for _ in range(2):
        event = yield web.next_event(reactor)
        assert (event["event_type"], event["code"]) == (codes.ERROR, codes.BAD_REQUEST)
    assert web.events.pending == []
    front.transport.loseConnection()
    yield front.closed
    yield web.close()


@pytest_twisted.inlineCallbacks
def test_bad_frames_get_2004_and_the_socket_stays_open(jwt_server: Server) -> Any:
    client = yield open_ws(jwt_server, "bea")
    client.sendMessage(b"not json", isBinary=False)
    client.sendMessage(b'{"event_type": 1001}', isBinary=True)
    client.send({"event_type": 2001, "dialog_id": "x"})
    client.send({"event_type": 1001, "dialog_id": "bad id!", "messages": {"content": "x"}})
    expected = [codes.BAD_REQUEST, codes.BAD_REQUEST, codes.UNKNOWN_EVENT, codes.BAD_REQUEST]
    for code in expected:
        event = yield client.next_event(reactor)
        assert (event["event_type"], event["code"]) == (codes.ERROR, code)
    yield client.close()
