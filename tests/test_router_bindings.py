"""Instance bindings (libchat.core.bindings): idle and background timers on a
task.Clock, memory API tokens, and hand-backs."""

from __future__ import annotations

from pathlib import Path

from libchat.protocol import codes

from .helpers import World, user_message


def test_idle_timeout_stops_foreground_and_sends_idle_2002(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.clock.advance(59)
    w.send(user_message("still here", message_id="m2"))  # resets the timer
    w.clock.advance(59)
    assert w.up.events == []
    w.clock.advance(2)
    assert w.last().stopped_with == 0
    assert w.up.events[-1]["event_type"] == 2002
    assert w.up.events[-1]["reason"] == codes.IDLE_TIMEOUT
    assert w.router.live_dialogs() == 0


def test_idle_timer_cancelled_when_program_ends(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().say({"event_type": 2002})
    assert [c.func.__name__ for c in w.clock.getDelayedCalls()] == ["_background_expired"]


def test_background_instance_is_stopped_after_its_limit(tmp_path: Path) -> None:
    w = World(tmp_path, background_limit=100)
    w.send(user_message("hello"))
    inst = w.last()
    inst.say({"event_type": 2002})
    assert [role for _, role, _ in w.router.instances()] == ["background"]
    w.clock.advance(99)
    assert not inst.gone
    w.clock.advance(1)
    assert inst.gone and w.up.types() == [2002]  # nothing more upstream
    assert w.router.instances() == [] and w.clock.getDelayedCalls() == []


def test_instances_report_their_role_and_dialog(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.runtime.auto_exit = False
    w.send(user_message("hello", dialog_id="a"))
    w.send(user_message("hello", dialog_id="b"))
    w.runtime.started[1].say({"event_type": 2003})
    roles = {(i.instance_id, role, d) for i, role, d in w.router.instances()}
    assert roles == {("f1", "foreground", "a"), ("f2", "stopping", "b")}
    assert w.router.live_dialogs() == 1


def test_tokens_are_valid_while_the_instance_lives(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    inst = w.last()
    info = w.router.token_info(inst.token)
    assert (info.dialog_id, info.user_id, info.program) == ("d1", "u1", "hello")
    inst.say({"event_type": 2002})
    assert w.router.token_info(inst.token) is not None  # background still lives
    inst.exit()
    assert w.router.token_info(inst.token) is None
    assert w.router.token_info("made-up") is None


def test_handback_after_2002_routes_the_message_anew(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    first = w.last()
    w.send(user_message("echo me", message_id="m2"))  # crossed the 2002 on the wire
    first.say({"event_type": 2002})
    first.say({"event_type": 2003, "message_id": "m2", "handback": True})
    second = w.last()
    assert second is not first and second.program == "echo"
    assert [e["message_id"] for e in second.sent] == ["m2"]
    assert [m["message_id"] for m in w.store.get("d1").messages
            if m["event_type"] == 1001] == ["m-hello", "m2"]  # recorded once


def test_handback_while_still_foreground_is_a_2003(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello", message_id="m1"))
    w.last().say({"event_type": 2003, "message_id": "m1", "handback": True})
    assert w.up.types() == [2003] and w.up.events[-1]["message_id"] == "m1"
    assert len(w.runtime.started) == 1


def test_a_handback_that_meets_busy_tells_the_dialogs_upstream(tmp_path: Path) -> None:
    w = World(tmp_path, max_programs=1)
    w.send(user_message("hello"))
    first = w.last()
    w.send(user_message("echo me", message_id="m2"))
    first.say({"event_type": 2002})  # background: still counts
    first.say({"event_type": 2003, "message_id": "m2", "handback": True})
    busy = w.up.events[-1]
    assert (busy["event_type"], busy["code"], busy["message_id"]) == (2004, codes.BUSY, "m2")


def test_handback_of_unknown_message_is_ignored(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().say({"event_type": 2002})
    w.last().say({"event_type": 2003, "message_id": "forged", "handback": True})
    assert len(w.runtime.started) == 1
