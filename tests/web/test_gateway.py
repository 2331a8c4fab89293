"""The web gateway alone: an upstream of channel ``web`` on a FakeRouter and a
task.Clock (the routing itself is the router's: tests/test_router*.py)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from libchat.doors.web.gateway import MAX_REPLAY, NotFound, WebGateway
from libchat.interfaces import IUpstream
from libchat.protocol import codes
from libchat.testing import FakeRouter, FakeUpstream

from .helpers import Pushes


def msg(dialog: str, user: str, content: str, message_id: str = "m1") -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "user_id": user, "message_id": message_id,
            "messages": {"content": content, "attachments": []}}


class Doors:
    def __init__(self) -> None:
        self.clock = Clock()
        self.router = FakeRouter()
        self.gateway = WebGateway(self.router, self.clock)
        self.router.attach(self.gateway)
        self.pushes = Pushes()
        self.gateway.pushers.append(self.pushes)


@pytest.fixture
def d() -> Doors:
    return Doors()


def test_the_gateway_is_an_always_alive_upstream_of_channel_web(d: Doors) -> None:
    assert verifyObject(IUpstream, d.gateway)
    assert d.gateway.channel == "web" and d.gateway.alive()
    assert d.router.upstreams == [d.gateway]


def test_receive_hands_the_event_to_the_router_and_returns_its_receipt(d: Doors) -> None:
    receipt = d.gateway.receive(msg("d1", "alice", "echo hi"))
    assert receipt.ok and receipt.seq == 1
    assert d.router.received == [(d.gateway, msg("d1", "alice", "echo hi"))]
    busy = codes.error(codes.BUSY, "full")
    d.router.refusals.append(busy)
    assert d.gateway.receive(msg("d1", "alice", "again", "m2")).error == busy


def test_replies_go_to_every_connection_of_the_dialogs_user_only(d: Doors) -> None:
    d.gateway.receive(msg("d1", "alice", "echo hi"))
    d.router.reply("d1", "echo: hi")
    [event] = d.pushes.to("alice")
    assert (event["event_type"], event["seq"], event["messages"]["content"]) == (
        2001, 2, "echo: hi")
    assert d.pushes.to("bob") == []


def test_dialogs_of_another_door_or_user_are_not_found(d: Doors) -> None:
    frame = FakeUpstream("frame")
    d.router.attach(frame)
    d.router.receive(frame, msg("fd", "alice", "echo over frames"))
    with pytest.raises(NotFound):
        d.gateway.replay("alice", "fd")
    with pytest.raises(NotFound):
        d.gateway.entries("alice", "fd")
    d.gateway.receive(msg("wd", "alice", "echo web"))
    assert d.gateway.info("alice", "wd").channel == "web"
    with pytest.raises(NotFound):
        d.gateway.info("bob", "wd")
    with pytest.raises(NotFound):
        d.gateway.info("alice", "nowhere")


def test_replay_gives_entries_after_a_seq_exactly_as_sent_at_most_500(d: Doors) -> None:
    d.gateway.receive(msg("d1", "alice", "echo 0", "m0"))
    for i in range(300):
        d.router.reply("d1", f"r{i}")
        d.gateway.receive(msg("d1", "alice", f"echo {i + 1}", f"m{i + 1}"))
    sent = d.pushes.to("alice")
    replay = d.gateway.replay("alice", "d1", after=0)
    assert len(replay) == MAX_REPLAY and replay[-1]["seq"] == 601
    assert [e["seq"] for e in replay] == list(range(102, 602))
    tail = d.gateway.replay("alice", "d1", after=sent[-1]["seq"] - 1)
    assert tail[0] == sent[-1]  # the very event that was pushed
    assert tail[1]["event_type"] == 1001 and tail[1]["user_id"] == "alice"
    assert d.gateway.replay("alice", "d1", after=601) == []
    with pytest.raises(NotFound):
        d.gateway.replay("bob", "d1")


def test_entries_page_from_the_first_after_a_seq(d: Doors) -> None:
    d.gateway.receive(msg("d1", "alice", "hi"))
    for i in range(3):
        d.router.reply("d1", f"r{i}")
    assert [e["seq"] for e in d.gateway.entries("alice", "d1", after=1, limit=2)] == [2, 3]


def test_a_session_is_an_empty_web_dialog_with_its_pinned_intent(d: Doors) -> None:
    sid = d.gateway.open_session("alice", "echo")
    info = d.gateway.info("alice", sid)
    assert sid.startswith("sess-") and (info.intent, info.seq, info.channel) == (
        "echo", 0, "web")
    assert d.gateway.open_session("alice") != sid
    with pytest.raises(ValueError):
        d.gateway.open_session("alice", "Not An Intent")


def test_long_poll_wakes_on_a_new_entry_and_times_out_otherwise(d: Doors) -> None:
    sid = d.gateway.open_session("alice", "echo")
    woke: list[Any] = []
    d.gateway.wait(sid, 30).addCallback(woke.append)
    assert d.gateway.waiting() == 1
    d.gateway.receive(msg(sid, "alice", "hi"))  # the user's own 1001 wakes it
    assert woke == [None] and d.gateway.waiting() == 0
    replied: list[Any] = []
    d.gateway.wait(sid, 30).addCallback(replied.append)
    d.router.reply(sid, "there")  # and so does a reply
    assert replied == [None]
    timed_out: list[Any] = []
    d.gateway.wait(sid, 5).addCallback(timed_out.append)
    d.clock.advance(4.9)
    assert timed_out == []
    d.clock.advance(0.2)
    assert timed_out == [None] and d.gateway.waiting() == 0


def test_a_cancelled_long_poll_is_forgotten(d: Doors) -> None:
    sid = d.gateway.open_session("alice")
    w = d.gateway.wait(sid, 30)
    w.addErrback(lambda f: None)
    w.cancel()
    assert d.gateway.waiting() == 0 and not d.clock.getDelayedCalls()
