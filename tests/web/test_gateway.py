"""The web gateway as the router's upstream, on fakes and a task.Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from libchat.protocol import codes
from libchat.interfaces import IUpstream
from libchat.testing import FakeUpstream
from libchat.doors.web.gateway import MAX_REPLAY, NotFound

from .helpers import World


def msg(dialog: str, user: str, content: str, message_id: str = "m1") -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "user_id": user, "message_id": message_id,
            "messages": {"content": content, "attachments": []}}


def test_the_gateway_is_an_always_alive_upstream_of_channel_web(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert verifyObject(IUpstream, w.gateway)
    assert w.gateway.channel == "web" and w.gateway.alive()


def test_replies_go_to_every_connection_of_the_dialogs_user_only(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert w.gateway.receive(msg("d1", "alice", "echo hi")) is None
    w.instance().say({"event_type": 2001, "messages": {"content": "echo: hi"}})
    [event] = w.pushes.to("alice")
    assert (event["event_type"], event["seq"], event["program"]) == (2001, 2, "echo")
    assert w.pushes.to("bob") == []


def test_a_dialog_stays_with_its_front_door(tmp_path: Path) -> None:
    w = World(tmp_path)
    frame = FakeUpstream("frame")
    w.router.attach(frame)
    w.router.receive(frame, msg("fd", "alice", "echo over frames"))
    answer = w.gateway.receive(msg("fd", "alice", "echo from the web", "m2"))
    assert answer is not None and answer["code"] == codes.BAD_REQUEST
    w.gateway.receive(msg("wd", "alice", "echo web"))
    answer = w.router.receive(frame, msg("wd", "alice", "echo from frames"))
    assert answer is not None and answer["code"] == codes.BAD_REQUEST
    with pytest.raises(NotFound):
        w.gateway.replay("alice", "fd")


def test_replay_gives_entries_after_a_seq_exactly_as_sent_at_most_500(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.gateway.receive(msg("d1", "alice", "echo 0", "m0"))
    inst = w.instance()
    for i in range(300):
        inst.say({"event_type": 2001, "messages": {"content": f"r{i}"}})
        w.gateway.receive(msg("d1", "alice", f"echo {i + 1}", f"m{i + 1}"))
    sent = w.pushes.to("alice")
    replay = w.gateway.replay("alice", "d1", after=0)
    assert len(replay) == MAX_REPLAY and replay[-1]["seq"] == 601
    assert [e["seq"] for e in replay] == list(range(102, 602))
    tail = w.gateway.replay("alice", "d1", after=sent[-1]["seq"] - 1)
    assert tail[0] == sent[-1]  # the very event that was pushed
    assert tail[1]["event_type"] == 1001 and tail[1]["user_id"] == "alice"
    assert w.gateway.replay("alice", "d1", after=601) == []
    with pytest.raises(NotFound):
        w.gateway.replay("bob", "d1")


def test_a_session_pins_its_intent(tmp_path: Path) -> None:
    w = World(tmp_path)
    sid = w.gateway.open_session("alice", "echo")
    w.gateway.receive(msg(sid, "alice", "no keyword here"))
    assert w.runtime.started[-1].program == "echo"
    with pytest.raises(ValueError):
        w.gateway.open_session("alice", "Not An Intent")


def test_long_poll_wakes_on_a_new_entry_and_times_out_otherwise(tmp_path: Path) -> None:
    w = World(tmp_path)
    sid = w.gateway.open_session("alice", "echo")
    woke: list[Any] = []
    w.gateway.wait(sid, 30).addCallback(woke.append)
    assert w.gateway.waiting() == 1
    w.gateway.receive(msg(sid, "alice", "hi"))  # the user's own 1001 wakes it
    assert woke == [None] and w.gateway.waiting() == 0
    timed_out: list[Any] = []
    w.gateway.wait(sid, 5).addCallback(timed_out.append)
    w.clock.advance(4.9)
    assert timed_out == []
    w.clock.advance(0.2)
    assert timed_out == [None] and w.gateway.waiting() == 0


def test_a_cancelled_long_poll_is_forgotten(tmp_path: Path) -> None:
    w = World(tmp_path)
    sid = w.gateway.open_session("alice")
    d = w.gateway.wait(sid, 30)
    d.addErrback(lambda f: None)
    d.cancel()
    assert w.gateway.waiting() == 0 and not w.clock.getDelayedCalls()
