"""Human operators end to end: a real ``twistd libchat`` with the bundled
``programs/human``, users and operators on real WebSockets, a front service
on a real frame connection (CONTRACT §13, docs/operators.md)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task

from libchat.doors.web.auth import mint
from libchat.doors.web.client import ChatClient, connect_ws
from libchat.protocol import codes
from libchat.tools.client import connect as connect_frame

from ..launcher import Libchat
from ..serving import wait_until
from ..web.conftest import SECRET, Server, start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[Server]:
    yield from start_server(tmp_path_factory)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def user(server: Server, user_id: str) -> defer.Deferred[ChatClient]:
    return connect_ws(reactor, "127.0.0.1", server.web, f"user_id={quote(user_id)}")


def operator(server: Server, operator_id: str) -> defer.Deferred[ChatClient]:
    return connect_ws(reactor, "127.0.0.1", server.web,
                      f"user_id={quote(operator_id)}&role=operator")


def say(client: Any, dialog_id: str, text: str, **extra: Any) -> None:
    client.send({"event_type": 1001, "dialog_id": dialog_id, "message_id": uuid.uuid4().hex,
                 "messages": {"content": text, "attachments": []}, **extra})


@defer.inlineCallbacks
def until(client: Any, done: Any, timeout: float = 15.0) -> Any:
    """Events until the first for which ``done(event)`` holds; returns that one."""
    while True:
        event = yield client.next_event(reactor, timeout)
        if done(event):
            return event


def on_disk(directory: Path, pattern: str) -> bool:
    """Some file under ``directory`` (snapshot, checkpoint, journal) matches."""
    return any(re.search(pattern, f.read_text(errors="replace"))
               for f in directory.rglob("*") if f.is_file())


def of(event_type: int, dialog_id: str | None = None) -> Any:
    return lambda e: e["event_type"] == event_type and (
        dialog_id is None or e.get("dialog_id") == dialog_id)


@defer.inlineCallbacks
def metrics(server: Server) -> Any:
    response = yield treq.get(server.url("/metrics"))
    text = yield response.text()
    return text


@pytest_twisted.inlineCallbacks
def test_a_user_asks_for_a_person_and_an_operator_answers(server: Server) -> Any:
    alice, d = (yield user(server, uid("alice"))), uid("d")
    say(alice, d, "我要人工")
    queued = yield until(alice, of(codes.REPLY, d))
    assert queued["status"] == "queued" and queued["place"] >= 1 and queued["program"] == "human"
    ada = yield operator(server, uid("ada"))
    snapshot = yield until(ada, of(3100))
    assert d in [q["dialog_id"] for q in snapshot["queue"]]
    assignment = yield until(ada, of(3101, d))
    assert [e["event_type"] for e in assignment["transcript"]] == [1001, 2001]
    assert assignment["transcript"][0]["messages"]["content"] == "我要人工"
    ada.send({"event_type": 3102, "dialog_id": d, "messages": {"content": "您好，请讲"}})
    reply = yield until(alice, of(codes.REPLY, d))
    assert reply["messages"]["content"] == "您好，请讲" and reply["operator"] == snapshot["operator_id"]
    echo = yield until(ada, of(codes.REPLY, d))
    assert echo["seq"] == reply["seq"] == 3
    say(alice, d, "my parcel is lost")
    forwarded = yield until(ada, of(codes.USER_MESSAGE, d))
    assert forwarded["messages"]["content"] == "my parcel is lost" and forwarded["seq"] == 4
    text = yield metrics(server)
    assert f'libchat_operator_active_dialogs{{operator="{snapshot["operator_id"]}"}} 1.0' in text
    assert "libchat_operator_wait_seconds_count" in text
    ada.send({"event_type": 3103, "dialog_id": d})
    ended = yield until(alice, of(codes.ENDED, d))
    assert ended["reason"] == codes.COMPLETED
    # the transcript holds the operator's words like any program's
    alice.send({"event_type": 1003, "dialog_id": d, "after": 2})
    replayed = yield until(alice, lambda e: e.get("seq") == 3)
    assert replayed == reply
    yield alice.close()
    yield ada.close()


@pytest_twisted.inlineCallbacks
def test_two_operators_share_dialogs_least_loaded_and_only_the_holder_writes(
        server: Server) -> Any:
    a_id, b_id = uid("op-a"), uid("op-b")
    a = yield operator(server, a_id)
    yield until(a, of(3100))
    b = yield operator(server, b_id)
    yield until(b, of(3100))
    users, dialogs = [], [uid("d") for _ in range(4)]
    for d in dialogs:
        u = yield user(server, uid("u"))
        users.append(u)
    held: dict[str, str] = {}
    for u, d in zip(users, dialogs):
        say(u, d, "I want to talk to a human")
        # each assignment lands before the next user asks: A, B, A, B
        got = yield until_either({a_id: a, b_id: b}, of(3101, d))
        held[d] = got
    assert sorted(held.values()) == sorted([a_id, a_id, b_id, b_id])
    assert held[dialogs[0]] != held[dialogs[1]]
    mine = next(d for d in dialogs if held[d] == a_id)
    b.send({"event_type": 3102, "dialog_id": mine, "messages": {"content": "intrude"}})
    refused = yield until(b, of(codes.ERROR))
    assert refused["code"] == codes.BAD_REQUEST and refused["dialog_id"] == mine
    # a user who is not an operator cannot write as one
    users[0].send({"event_type": 3102, "dialog_id": dialogs[0], "messages": {"content": "x"}})
    refused = yield until(users[0], of(codes.ERROR))
    assert refused["code"] == codes.BAD_REQUEST and "only operators" in refused["message"]
    for d in dialogs:
        (a if held[d] == a_id else b).send({"event_type": 3103, "dialog_id": d})
    for u, d in zip(users, dialogs):
        ended = yield until(u, of(codes.ENDED, d))
        assert ended["reason"] == codes.COMPLETED
    for client in (*users, a, b):
        yield client.close()


@defer.inlineCallbacks
def until_either(operators: dict[str, Any], done: Any, timeout: float = 15.0) -> Any:
    """The id of the operator who got the event (looking at both queues,
    so neither loses an event to the other's wait)."""
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        for operator_id, client in operators.items():
            pending = client.events.pending
            while pending:
                if done(pending.pop(0)):
                    return operator_id
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("no operator got it")


@pytest_twisted.inlineCallbacks
def test_a_frame_protocol_dialog_goes_to_a_human_too(server: Server) -> Any:
    op = yield operator(server, uid("op-f"))
    yield until(op, of(3100))
    front = yield connect_frame(reactor, f"tcp:127.0.0.1:{server.ports['front']}")
    d = uid("fd")
    front.send({"event_type": 1001, "dialog_id": d, "user_id": "front-user",
                "message_id": "m1", "messages": {"content": "转人工", "attachments": []}})
    assignment = yield until(op, of(3101, d))
    assert assignment["channel"] == "frame" and assignment["user_id"] == "front-user"
    op.send({"event_type": 3102, "dialog_id": d, "messages": {"content": "hello from a person"}})
    reply = yield front.next_event(reactor, 15)
    assert reply["event_type"] == codes.REPLY and reply["operator"]
    assert reply["messages"]["content"] == "hello from a person"
    op.send({"event_type": 3103, "dialog_id": d})
    ended = yield front.next_event(reactor, 15)
    assert (ended["event_type"], ended["reason"]) == (codes.ENDED, codes.COMPLETED)
    front.transport.loseConnection()
    yield front.closed
    yield op.close()


@pytest.mark.timeout(180)
@pytest_twisted.inlineCallbacks
def test_the_queue_and_assignments_survive_a_restart_and_a_kill_9(tmp_path_factory: Any) -> Any:
    servers = start_server(tmp_path_factory)
    server = next(servers)
    try:
        ada_id, d1, d2, d3 = uid("ada"), uid("d"), uid("d"), uid("d")
        u1 = yield user(server, "u1")
        ada = yield operator(server, ada_id)
        say(u1, d1, "human please")
        yield until(ada, of(3101, d1))
        ada.send({"event_type": 3102, "dialog_id": d1, "messages": {"content": "one moment"}})
        yield until(u1, lambda e: e.get("operator") == ada_id)
        yield ada.close()  # ada is away: d1 stays hers for 30 s
        u2 = yield user(server, "u2")
        say(u2, d2, "人工")
        yield until(u2, lambda e: e.get("status") == "queued")
        for client in (u1, u2):
            yield client.close()
        # a clean restart: ada's d1 and the queued d2 are still so; ada has
        # room, so d2 is hers once she is back. Then a crash: both are hers.
        # (Libchat.stop: the web Server's own stop also removes the runtime dir)
        for stop, held, queued in ((lambda: Libchat.stop(server), [d1], [d2]),
                                   (server.kill9, [d1, d2], [])):
            stop()
            server.restart()
            ada = yield operator(server, ada_id)
            snapshot = yield until(ada, of(3100))
            assert snapshot["dialogs"] == held
            assert [q["dialog_id"] for q in snapshot["queue"]] == queued
            again = yield until(ada, of(3101, d1))
            assert [e["messages"]["content"] for e in again["transcript"]][:2] == [
                "human please", "one moment"]
            if queued:  # offered to ada as soon as she is back
                yield until(ada, of(3101, d2))
            ada.send({"event_type": 3102, "dialog_id": d1, "messages": {"content": "back"}})
            back = yield until(ada, lambda e: e.get("messages", {}).get("content") == "back")
            yield ada.close()
            # transcripts and tickets are written behind (docs/durability.md,
            # docs/operators.md): what is asserted after the kill -9 is on disk first
            assigned = f'"dialog_id":"{d2}"[^}}]*"operator":"{ada_id}"'
            yield wait_until(lambda: on_disk(server.data, re.escape(back["message_id"]))
                             and on_disk(server.data, assigned), 15)
        # nobody got a 2002 program_exited: the dialogs were resumed, not ended
        u1 = yield user(server, "u1")
        u1.send({"event_type": 1003, "dialog_id": d1, "after": 0})
        replayed = []
        while not replayed or replayed[-1]["messages"]["content"] != "back" \
                or sum(e["messages"]["content"] == "back" for e in replayed) < 2:
            replayed.append((yield u1.next_event(reactor, 15)))
        assert codes.ENDED not in [e["event_type"] for e in replayed]
        say(u1, d3, "echo after the restarts")  # and the server serves as usual
        echo = yield until(u1, of(codes.REPLY, d3))
        assert echo["messages"]["content"] == "echo: echo after the restarts"
        yield u1.close()
    finally:
        for _ in servers:  # runs on: stops the server and checks its log
            pass


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: Any) -> Iterator[Server]:
    yield from start_server(tmp_path_factory, "--auth-secret", SECRET)


@pytest_twisted.inlineCallbacks
def test_the_operator_role_comes_from_the_jwt_only(jwt_server: Server) -> Any:
    secret = SECRET.encode()
    plain = yield connect_ws(reactor, "127.0.0.1", jwt_server.web,
                             f"token={mint(secret, 'eve')}&role=operator")
    plain.send({"event_type": 3103, "dialog_id": "d1"})
    refused = yield plain.next_event(reactor, 15)
    assert refused["code"] == codes.BAD_REQUEST and "only operators" in refused["message"]
    staff = yield connect_ws(reactor, "127.0.0.1", jwt_server.web,
                             f"token={mint(secret, 'olga', role='operator')}")
    snapshot = yield staff.next_event(reactor, 15)
    assert snapshot["event_type"] == 3100 and snapshot["operator_id"] == "olga"
    yield plain.close()
    yield staff.close()
