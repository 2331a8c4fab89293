"""Router rules of CONTRACT sections 2-3, over fakes and a task.Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from libchat.protocol import codes
from libchat.storage.records import CLOSED, FOREGROUND, OPEN, DialogRecord
from libchat.testing import FakeUpstream

from .helpers import World, close, tmp_dir, user_message
from .logcheck import LogCheckMixin


class RouterTests(LogCheckMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.w = World(tmp_dir(self))

    def test_first_message_starts_the_resolved_program_and_forwards_it(self) -> None:
        w = self.w
        assert w.send(user_message("hello there")) is None
        inst = w.last()
        assert (inst.program, inst.dialog_id, inst.user_id) == ("hello", "d1", "u1")
        assert inst.sent == [user_message("hello there")]
        assert w.store.get("d1").state == FOREGROUND

    def test_later_messages_go_to_the_same_instance_only(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.send(user_message("echo this would match echo", message_id="m2"))
        assert len(w.runtime.started) == 1
        assert [e["message_id"] for e in w.last().sent] == ["m-hello", "m2"]

    def test_two_dialogs_get_two_instances_and_never_each_others_messages(self) -> None:
        w = self.w
        w.send(user_message("hello", dialog_id="a"))
        w.send(user_message("hello", dialog_id="b", user_id="u2"))
        w.send(user_message("for a", dialog_id="a"))
        a, b = w.runtime.started
        assert {e["dialog_id"] for e in a.sent} == {"a"}
        assert {e["dialog_id"] for e in b.sent} == {"b"}
        b.say({"event_type": 2001, "messages": {"content": "to b"}})
        assert w.up.events[-1]["dialog_id"] == "b" and w.up.events[-1]["user_id"] == "u2"

    def test_intent_order_explicit_then_command_then_pattern_then_keyword(self) -> None:
        w = self.w
        lib = w.library
        assert lib.resolve("hello weather", intent="echo").name == "echo"
        assert lib.resolve("/weather hello").name == "weather"
        assert lib.resolve("/nosuch echo").name == "echo"  # unknown command: rules go on
        assert lib.resolve("HELLO echo").name == "hello"  # pattern beats keyword
        assert lib.resolve("the FORECAST please, echo").name == "weather"
        assert lib.resolve("please ECHO").name == "echo"
        assert lib.resolve("nothing matches") is None
        assert lib.resolve("hello", intent="nosuch") is None

    def test_no_matching_program_answers_2003_with_the_message(self) -> None:
        w = self.w
        w.send(user_message("nothing matches", message_id="mx"))
        ev = w.up.events[-1]
        assert ev["event_type"] == 2003 and ev["message_id"] == "mx"
        assert ev["messages"]["content"] == "nothing matches"
        assert w.runtime.started == []

    def test_program_receives_content_unchanged_and_no_intent_field(self) -> None:
        w = self.w
        w.send(user_message("/echo  spaced  ", intent="echo"))
        assert w.last().sent[0]["messages"]["content"] == "/echo  spaced  "
        assert "intent" not in w.last().sent[0]

    def test_reply_carries_the_dialogs_own_ids_whatever_the_program_wrote(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.last().say({"event_type": 2001, "dialog_id": "other", "user_id": "evil",
                      "message_id": "r1", "messages": {"content": "hi", "attachments": []}})
        ev = w.up.events[-1]
        assert (ev["dialog_id"], ev["user_id"], ev["message_id"]) == ("d1", "u1", "r1")
        assert ev["messages"]["content"] == "hi" and ev["program"] == "hello"
        assert "background" not in ev

    def test_program_2002_frees_the_foreground_and_later_replies_are_background(self) -> None:
        w = self.w
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

    def test_program_2003_stops_it_frees_foreground_and_no_2002_follows(self) -> None:
        w = self.w
        w.send(user_message("hello", message_id="m9"))
        inst = w.last()
        inst.say({"event_type": 2003})
        assert w.up.types() == [2003]
        assert w.up.events[-1]["message_id"] == "m9"
        assert w.up.events[-1]["messages"]["content"] == "hello"
        assert inst.gone  # stopped (the fake exits at once)
        assert w.store.get("d1").state == OPEN

    def test_idle_timeout_stops_foreground_and_sends_idle_2002(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.clock.advance(59)
        w.send(user_message("still here", message_id="m2"))  # resets the timer
        w.clock.advance(59)
        assert w.up.events == []
        w.clock.advance(2)
        assert w.last().stopped_with == 0
        assert w.up.events[-1]["event_type"] == 2002
        assert w.up.events[-1]["reason"] == codes.IDLE_TIMEOUT

    def test_idle_timer_cancelled_when_program_ends(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.last().say({"event_type": 2002})
        assert w.clock.getDelayedCalls() == [c for c in w.clock.getDelayedCalls()
                                             if c.func.__name__ == "_background_expired"]

    def test_background_instance_is_stopped_after_its_limit(self) -> None:
        w = World(tmp_dir(self), background_limit=100)
        w.send(user_message("hello"))
        inst = w.last()
        inst.say({"event_type": 2002})
        w.clock.advance(99)
        assert not inst.gone
        w.clock.advance(1)
        assert inst.gone and w.up.types() == [2002]  # nothing more upstream

    def test_close_forwards_1002_stops_everything_and_answers_client_closed(self) -> None:
        w = World(tmp_dir(self))
        w.runtime.auto_exit = False
        w.send(user_message("hello"))
        bg = w.last()
        bg.say({"event_type": 2002})
        w.send(user_message("echo", message_id="m2"))
        fg = w.last()
        w.send(close())
        assert fg.sent[-1] == close()
        assert fg.stopped_with == 2.0  # half the kill grace to run its close hook
        assert bg.stopped_with == 0.0
        assert w.up.events[-1]["reason"] == codes.CLIENT_CLOSED
        assert w.store.get("d1").state == CLOSED

    def test_close_of_unknown_dialog_still_answers_client_closed(self) -> None:
        w = self.w
        w.send(close("never-seen"))
        assert w.up.events == [{"event_type": 2002, "dialog_id": "never-seen", "user_id": "u1",
                                "reason": codes.CLIENT_CLOSED}]
        assert w.store.get("never-seen") is None

    def test_closed_dialog_reopens_on_a_new_message(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.send(close())
        w.send(user_message("echo", message_id="m3"))
        assert w.last().program == "echo" and w.store.get("d1").state == FOREGROUND

    def test_other_users_event_is_bad_request_and_changes_nothing(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        answer = w.send(user_message("mine now", user_id="mallory", message_id="m2"))
        assert answer["code"] == codes.BAD_REQUEST and answer["dialog_id"] == "d1"
        assert len(w.last().sent) == 1
        assert w.send(close(user_id="mallory"))["code"] == codes.BAD_REQUEST
        assert w.last().stopped_with is None

    def test_exit_before_connect_is_program_failed(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.last().exit("exit code 1")
        assert w.up.events[-1]["reason"] == codes.PROGRAM_FAILED

    def test_exit_mid_dialog_is_program_exited_and_next_message_starts_anew(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        inst = w.last()
        inst.connect()
        inst.exit("exit code 3")
        assert w.up.events[-1]["reason"] == codes.PROGRAM_EXITED
        w.send(user_message("hello", message_id="m2"))
        assert len(w.runtime.started) == 2

    def test_exit_in_background_tells_upstream_nothing(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        inst = w.last()
        inst.connect()
        inst.say({"event_type": 2002})
        inst.exit()
        assert w.up.types() == [2002]

    def test_max_programs_counts_background_and_answers_busy(self) -> None:
        w = World(tmp_dir(self), max_programs=1)
        w.send(user_message("hello", dialog_id="a"))
        w.last().say({"event_type": 2002})  # background, still live
        answer = w.send(user_message("hello", dialog_id="b", message_id="mb"))
        assert answer["code"] == codes.BUSY
        assert (answer["dialog_id"], answer["message_id"]) == ("b", "mb")
        w.runtime.started[0].exit()
        assert w.send(user_message("hello", dialog_id="b", message_id="mb")) is None

    def test_replies_go_to_last_sender_then_another_live_one_then_wait(self) -> None:
        w = self.w
        other = FakeUpstream()
        w.router.attach(other)
        w.send(user_message("hello"))
        inst = w.last()
        w.send(user_message("again", message_id="m2"), up=other)
        inst.say({"event_type": 2001, "messages": {"content": "1"}})
        assert other.events[-1]["messages"]["content"] == "1"
        other.connected = False
        w.router.detach(other)
        inst.say({"event_type": 2001, "messages": {"content": "2"}})
        assert w.up.events[-1]["messages"]["content"] == "2"
        w.up.connected = False
        w.router.detach(w.up)
        inst.say({"event_type": 2001, "messages": {"content": "3"}})
        inst.say({"event_type": 2002})
        assert w.router.pending_count() == 2
        late = FakeUpstream()
        w.router.attach(late)
        assert [e["event_type"] for e in late.events] == [2001, 2002]
        assert late.events[0]["messages"]["content"] == "3"

    def test_replies_never_fall_back_to_another_channel(self) -> None:
        w = self.w
        web = FakeUpstream(channel="web")
        w.router.attach(web)
        w.send(user_message("hello"))
        w.up.connected = False
        w.last().say({"event_type": 2001, "messages": {"content": "x"}})
        assert web.events == [] and w.router.pending_count("frame") == 1

    def test_every_transcript_entry_and_event_carries_growing_seq(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.last().say({"event_type": 2001, "messages": {"content": "a"}})
        w.last().say({"event_type": 2002})
        record = w.store.get("d1")
        assert [m["seq"] for m in record.messages] == [1, 2, 3]
        assert [m["event_type"] for m in record.messages] == [1001, 2001, 2002]
        assert [e["seq"] for e in w.up.events] == [2, 3]

    def test_handback_after_2002_routes_the_message_anew(self) -> None:
        w = self.w
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

    def test_handback_of_unknown_message_is_ignored(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        w.last().say({"event_type": 2002})
        w.last().say({"event_type": 2003, "message_id": "forged", "handback": True})
        assert len(w.runtime.started) == 1

    def test_tokens_are_valid_while_the_instance_lives(self) -> None:
        w = self.w
        w.send(user_message("hello"))
        inst = w.last()
        info = w.router.token_info(inst.token)
        assert (info.dialog_id, info.user_id, info.program) == ("d1", "u1", "hello")
        inst.say({"event_type": 2002})
        assert w.router.token_info(inst.token) is not None  # background still lives
        inst.exit()
        assert w.router.token_info(inst.token) is None
        assert w.router.token_info("made-up") is None

    def test_restart_reopens_dialogs_whose_program_was_running(self) -> None:
        w = World(tmp_dir(self))
        w.store.add(DialogRecord(dialog_id="old", user_id="u", created_at=1, updated_at=1,
                                 program="hello", state=FOREGROUND))
        w.router.detach(w.up)
        w.router.start()
        assert w.store.get("old").state == OPEN
        late = FakeUpstream()
        w.router.attach(late)  # told once an upstream of its channel connects
        assert late.events[-1]["dialog_id"] == "old"
        assert late.events[-1]["reason"] == codes.PROGRAM_EXITED

    def test_stop_stops_every_instance_and_cancels_timers(self) -> None:
        w = self.w
        w.send(user_message("hello", dialog_id="a"))
        w.send(user_message("hello", dialog_id="b"))
        w.runtime.started[1].say({"event_type": 2002})
        w.router.stop()
        assert w.runtime.live == []
        assert w.clock.getDelayedCalls() == []
