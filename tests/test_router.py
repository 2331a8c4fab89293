"""The router's policy (docs/protocol.md §2, docs/protocol.md §2-3): binding, intents, 2002/2003,
BUSY, close, restart; over fakes and a task.Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libchat.interfaces import IInstanceOwner, NoRoom
from libchat.protocol import codes
from libchat.storage.records import CLOSED, FOREGROUND, OPEN, DialogRecord
from libchat.testing import FakeRuntime, FakeUpstream

from .helpers import World, close, user_message


def test_first_message_starts_the_resolved_program_and_forwards_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    receipt = w.send(user_message("hello there"))
    assert receipt.ok and receipt.seq == 1
    inst = w.last()
    assert (inst.program, inst.dialog_id, inst.user_id) == ("hello", "d1", "u1")
    assert inst.sent == [user_message("hello there")]
    assert w.store.get("d1").state == FOREGROUND


def test_later_messages_go_to_the_same_instance_only(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    assert w.send(user_message("echo this would match echo", message_id="m2")).seq == 2
    assert len(w.runtime.started) == 1
    assert [e["message_id"] for e in w.last().sent] == ["m-hello", "m2"]


def test_two_dialogs_get_two_instances_and_never_each_others_messages(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello", dialog_id="a"))
    w.send(user_message("hello", dialog_id="b", user_id="u2"))
    w.send(user_message("for a", dialog_id="a"))
    a, b = w.runtime.started
    assert {e["dialog_id"] for e in a.sent} == {"a"}
    assert {e["dialog_id"] for e in b.sent} == {"b"}
    b.say({"event_type": 2001, "messages": {"content": "to b"}})
    assert w.up.events[-1]["dialog_id"] == "b" and w.up.events[-1]["user_id"] == "u2"


def test_intent_order_explicit_then_command_then_pattern_then_keyword(tmp_path: Path) -> None:
    lib = World(tmp_path).library
    assert lib.resolve("hello weather", intent="echo").name == "echo"
    assert lib.resolve("/weather hello").name == "weather"
    assert lib.resolve("/nosuch echo").name == "echo"  # unknown command: rules go on
    assert lib.resolve("HELLO echo").name == "hello"  # pattern beats keyword
    assert lib.resolve("the FORECAST please, echo").name == "weather"
    assert lib.resolve("please ECHO").name == "echo"
    assert lib.resolve("nothing matches") is None
    assert lib.resolve("hello", intent="nosuch") is None


def test_no_matching_program_answers_2003_with_the_message(tmp_path: Path) -> None:
    w = World(tmp_path)
    receipt = w.send(user_message("nothing matches", message_id="mx"))
    assert receipt.ok and receipt.seq == 1  # the user's 1001 was recorded
    ev = w.up.events[-1]
    assert ev["event_type"] == 2003 and ev["message_id"] == "mx" and ev["seq"] == 2
    assert ev["messages"]["content"] == "nothing matches"
    assert w.runtime.started == []


def test_a_pinned_intent_picks_the_program_when_the_message_names_none(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    web = FakeUpstream("web")
    w.router.attach(web)
    info = w.router.open("s1", "u1", "web", intent="echo")
    assert (info.intent, info.seq, info.state) == ("echo", 0, OPEN)
    assert w.router.receive(web, user_message("no keyword here", dialog_id="s1")).seq == 1
    assert w.last().program == "echo"


def test_program_receives_content_unchanged_and_no_intent_field(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("/echo  spaced  ", intent="echo"))
    assert w.last().sent[0]["messages"]["content"] == "/echo  spaced  "
    assert "intent" not in w.last().sent[0]


def test_reply_carries_the_dialogs_own_ids_whatever_the_program_wrote(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().say({"event_type": 2001, "dialog_id": "other", "user_id": "evil",
                  "message_id": "r1", "messages": {"content": "hi", "attachments": []}})
    ev = w.up.events[-1]
    assert (ev["dialog_id"], ev["user_id"], ev["message_id"]) == ("d1", "u1", "r1")
    assert ev["messages"]["content"] == "hi" and ev["program"] == "hello"
    assert "background" not in ev


def test_program_2002_frees_the_foreground_and_later_replies_are_background(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    first = w.last()
    first.say({"event_type": 2002})
    assert w.up.events[-1]["event_type"] == 2002
    assert w.up.events[-1]["reason"] == codes.COMPLETED
    assert w.store.get("d1").state == OPEN
    first.say({"event_type": 2001, "messages": {"content": "later"}})
    assert w.up.events[-1]["background"] is True
    w.send(user_message("echo again", message_id="m2"))
    assert len(w.runtime.started) == 2 and w.last().program == "echo"
    assert first.stopped_with is None  # background instances keep running


def test_program_2003_stops_it_frees_foreground_and_no_2002_follows(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello", message_id="m9"))
    inst = w.last()
    inst.say({"event_type": 2003})
    assert w.up.types() == [2003]
    assert w.up.events[-1]["message_id"] == "m9"
    assert w.up.events[-1]["messages"]["content"] == "hello"
    assert inst.gone  # stopped (the fake exits at once)
    assert w.store.get("d1").state == OPEN


def test_close_forwards_1002_stops_everything_and_answers_client_closed(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    w.runtime.auto_exit = False
    w.send(user_message("hello"))
    bg = w.last()
    bg.say({"event_type": 2002})
    w.send(user_message("echo", message_id="m2"))
    fg = w.last()
    receipt = w.send(close())
    assert fg.sent[-1] == close()
    assert fg.stopped_with == 2.0  # half the kill grace to run its close hook
    assert bg.stopped_with == 0.0
    assert w.up.events[-1]["reason"] == codes.CLIENT_CLOSED
    assert receipt.seq == w.up.events[-1]["seq"]
    assert w.store.get("d1").state == CLOSED


def test_close_of_unknown_dialog_still_answers_client_closed(tmp_path: Path) -> None:
    w = World(tmp_path)
    receipt = w.send(close("never-seen"))
    assert receipt.ok and receipt.seq is None
    assert w.up.events == [{"event_type": 2002, "dialog_id": "never-seen", "user_id": "u1",
                            "reason": codes.CLIENT_CLOSED}]
    assert w.store.get("never-seen") is None


def test_closed_dialog_reopens_on_a_new_message(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.send(close())
    w.send(user_message("echo", message_id="m3"))
    assert w.last().program == "echo" and w.store.get("d1").state == FOREGROUND


def test_other_users_event_is_bad_request_and_changes_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    answer = w.send(user_message("mine now", user_id="mallory", message_id="m2")).error
    assert answer["code"] == codes.BAD_REQUEST and answer["dialog_id"] == "d1"
    assert len(w.last().sent) == 1
    assert w.send(close(user_id="mallory")).error["code"] == codes.BAD_REQUEST
    assert w.last().stopped_with is None
    assert w.router.info("d1").seq == 1


def test_exit_before_connect_is_program_failed(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().exit("exit code 1")
    assert w.up.events[-1]["reason"] == codes.PROGRAM_FAILED


def test_a_failure_before_connecting_carries_its_detail(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().exit("http_error: HTTP 401")
    assert (w.up.events[-1]["reason"], w.up.events[-1]["detail"]) == (
        codes.PROGRAM_FAILED, "http_error: HTTP 401")


def test_an_instance_busy_for_one_message_is_told_and_not_recorded(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().connect()
    seq = w.router.info("d1").seq
    w.last().say(codes.error(codes.BUSY, "queue full", message_id="m1"))
    busy = w.up.events[-1]
    assert (busy["event_type"], busy["code"], busy["message_id"], busy["dialog_id"]) == (
        codes.ERROR, codes.BUSY, "m1", "d1")
    assert w.router.info("d1").seq == seq  # nothing recorded; still bound
    assert w.store.get("d1").state == FOREGROUND


def test_exit_mid_dialog_is_program_exited_and_next_message_starts_anew(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    inst = w.last()
    inst.connect()
    inst.exit("exit code 3")
    assert w.up.events[-1]["reason"] == codes.PROGRAM_EXITED
    w.send(user_message("hello", message_id="m2"))
    assert len(w.runtime.started) == 2


def test_exit_in_background_tells_upstream_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    inst = w.last()
    inst.connect()
    inst.say({"event_type": 2002})
    inst.exit()
    assert w.up.types() == [2002]


# -- BUSY ---------------------------------------------------------------------------


def test_max_programs_counts_background_and_answers_busy(tmp_path: Path) -> None:
    w = World(tmp_path, max_programs=1)
    w.send(user_message("hello", dialog_id="a"))
    w.last().say({"event_type": 2002})  # background, still live
    answer = w.send(user_message("hello", dialog_id="b", message_id="mb")).error
    assert answer["code"] == codes.BUSY
    assert (answer["dialog_id"], answer["message_id"]) == ("b", "mb")
    w.runtime.started[0].exit()
    assert w.send(user_message("hello", dialog_id="b", message_id="mb")).ok


def test_a_busy_first_message_leaves_no_dialog_record(tmp_path: Path) -> None:
    """Regression: the record used to be added before the limit was checked."""
    w = World(tmp_path, max_programs=1)
    w.send(user_message("hello", dialog_id="a"))
    receipt = w.send(user_message("hello", dialog_id="b", message_id="mb"))
    assert w.store.get("b") is None, "a refused first message left a record"
    assert w.router.info("b") is None
    assert receipt.error["code"] == codes.BUSY and receipt.seq is None


def test_a_busy_later_message_records_nothing_in_the_dialog(tmp_path: Path) -> None:
    w = World(tmp_path, max_programs=1)
    w.send(user_message("hello", dialog_id="b"))
    w.last().say({"event_type": 2003})  # frees b's foreground, stops it
    w.send(user_message("hello", dialog_id="a"))
    before = w.router.info("b").seq
    assert w.send(user_message("hello", dialog_id="b", message_id="m2")).error["code"] \
        == codes.BUSY
    assert w.router.info("b").seq == before


class FullRuntime(FakeRuntime):
    """A runtime that has no room for one more instance now."""

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> Any:
        raise NoRoom("no room for a hosted conversation now")


def test_a_runtime_without_room_is_answered_busy_and_nothing_is_recorded(
        tmp_path: Path) -> None:
    w = World(tmp_path, runtime=FullRuntime())
    receipt = w.send(user_message("hello", message_id="m1"))
    assert receipt.error["code"] == codes.BUSY and receipt.error["message_id"] == "m1"
    assert "no room" in receipt.error["message"]
    assert w.store.get("d1") is None and w.up.events == []


class RemoteRuntime(FakeRuntime):
    """Instances of ``hello`` run elsewhere and do not count."""

    def counts(self, program: str) -> bool:
        return program != "hello"


def test_max_programs_counts_only_what_the_runtime_says_counts(tmp_path: Path) -> None:
    w = World(tmp_path, max_programs=1, runtime=RemoteRuntime())
    for n in range(3):
        assert w.send(user_message("hello", dialog_id=f"h{n}")).ok
    assert w.send(user_message("echo", dialog_id="e1")).ok
    assert w.send(user_message("echo", dialog_id="e2")).error["code"] == codes.BUSY
    assert len(w.runtime.live) == 4


# -- lifecycle -------------------------------------------------------------------------


def test_restart_reopens_dialogs_whose_program_was_running(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.store.add(DialogRecord(dialog_id="old", user_id="u", created_at=1, updated_at=1,
                             program="hello", state=FOREGROUND))
    w.router.detach(w.up)
    w.router.start()
    assert w.store.get("old").state == OPEN
    late = FakeUpstream()
    w.router.attach(late)  # told once an upstream of its channel connects
    assert late.events[-1]["dialog_id"] == "old"
    assert late.events[-1]["reason"] == codes.PROGRAM_EXITED


def test_stop_stops_every_instance_and_cancels_timers(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello", dialog_id="a"))
    w.send(user_message("hello", dialog_id="b"))
    w.runtime.started[1].say({"event_type": 2002})
    w.router.stop()
    assert w.runtime.live == []
    assert w.clock.getDelayedCalls() == []


class FailingRuntime(FakeRuntime):
    """Its instances fail inside start() (say, an agent whose key is gone)."""

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> Any:
        inst = super().start(program, dialog_id, user_id, owner)
        inst.exit("could not start: no key")
        return inst


def test_an_instance_gone_inside_start_ends_the_dialog_program_failed(tmp_path: Path) -> None:
    """Not bound to a dead instance until the idle timeout: the user's 1001 is
    recorded, then 2002 program_failed, and the foreground is free again."""
    w = World(tmp_path, runtime=FailingRuntime())
    receipt = w.send(user_message("hello", message_id="m1"))
    assert receipt.ok and receipt.seq == 1
    assert [(e["event_type"], e.get("reason")) for e in w.up.events] == [
        (codes.ENDED, codes.PROGRAM_FAILED)]
    assert w.router.info("d1").state == OPEN and w.router.live_dialogs() == 0
    assert w.runtime.started[0].sent == [], "nothing is sent to a gone instance"
    w.send(user_message("hello", message_id="m2"))  # the next message starts anew
    assert len(w.runtime.started) == 2
