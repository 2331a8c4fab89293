"""The operators runtime with the real router, over fakes and a task.Clock
(CONTRACT §13, docs/operators.md)."""

from __future__ import annotations

from pathlib import Path

from zope.interface.verify import verifyObject

from libchat.interfaces import IInstance, IOperatorDesk, IOperatorSink, IResumingRuntime
from libchat.protocol import codes
from libchat.runtimes.operators.book import IOperatorBook, JournalBook, MemoryBook
from libchat.storage.records import FOREGROUND
from libchat.storage.store import run_inline

from .world import Desk, Sink


def assigned(sink: Sink) -> list[str]:
    return [e["dialog_id"] for e in sink.of(3101)]


def test_the_runtime_its_instances_books_and_sinks_verify(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    assert verifyObject(IResumingRuntime, w.desk) and verifyObject(IOperatorDesk, w.desk)
    assert verifyObject(IOperatorBook, MemoryBook())
    assert verifyObject(IOperatorBook, JournalBook(tmp_path / "b", run_inline))
    assert verifyObject(IOperatorSink, Sink())
    w.say("人工")
    (binding,) = w.router.instances()
    assert verifyObject(IInstance, binding[0]) and binding[0].pid is None


def test_a_user_asking_for_a_person_is_queued_with_a_place(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    assert w.say("我要人工客服").ok
    w.say("转人工", dialog_id="d2", user_id="u2")
    (first,) = w.to_user("d1")
    assert first["event_type"] == 2001 and first["status"] == "queued" and first["place"] == 1
    assert "number 1" in first["messages"]["content"] and first["program"] == "human"
    assert w.to_user("d2")[0]["place"] == 2
    assert w.router.info("d1").state == FOREGROUND
    assert w.node.started == []  # no process of any kind


def test_operator_instances_never_count_against_max_programs(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.router.max_programs = 1
    for i in range(3):
        assert w.say("human please", dialog_id=f"d{i}", user_id=f"u{i}").ok
    assert len(w.router.instances()) == 3


def test_an_operator_gets_the_snapshot_then_3101_with_the_transcript(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.say("人工")
    ada = w.connect("ada")
    snapshot, (assignment,) = ada.events[0], ada.of(3101)
    assert snapshot["event_type"] == 3100 and snapshot["operator_id"] == "ada"
    assert [q["dialog_id"] for q in snapshot["queue"]] == ["d1"]
    assert assignment["event_type"] == 3101 and assignment["user_id"] == "u1"
    assert assignment["program"] == "human" and assignment["channel"] == "frame"
    assert [(e["event_type"], e["seq"]) for e in assignment["transcript"]] == [(1001, 1), (2001, 2)]
    assert assignment["transcript"][0]["messages"]["content"] == "人工"


def test_assignment_is_first_come_first_served(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    for d in ("d1", "d2", "d3"):
        w.say("human", dialog_id=d, user_id="u" + d)
    ada = w.connect("ada")
    assert assigned(ada) == ["d1", "d2", "d3"]


def test_the_least_loaded_operator_gets_the_next_dialog_ties_to_the_first(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("human", dialog_id="d1")
    w.say("human", dialog_id="d2", user_id="u2")
    bob = w.connect("bob")
    w.say("human", dialog_id="d3", user_id="u3")  # ada 2, bob 0 -> bob
    w.say("human", dialog_id="d4", user_id="u4")  # ada 2, bob 1 -> bob
    w.say("human", dialog_id="d5", user_id="u5")  # 2 and 2: the first connected
    assert assigned(ada) == ["d1", "d2", "d5"] and assigned(bob) == ["d3", "d4"]


def test_max_per_operator_holds_a_dialog_in_the_queue_until_one_is_done(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=2)
    ada = w.connect("ada")
    for d in ("d1", "d2", "d3"):
        w.say("human", dialog_id=d, user_id="u" + d)
    assert assigned(ada) == ["d1", "d2"]
    assert [t.dialog_id for t in w.desk.queue()] == ["d3"]
    assert w.to_user("d3")[-1]["status"] == "queued"
    assert w.done("ada", "d1") is None
    assert assigned(ada) == ["d1", "d2", "d3"] and w.desk.queue() == []


def test_a_reply_reaches_the_user_with_the_operator_and_echoes_with_seq(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("人工")
    assert w.reply("ada", "d1", "您好，我是 Ada") is None
    reply = w.to_user("d1")[-1]
    assert reply["event_type"] == 2001 and reply["operator"] == "ada"
    assert reply["messages"] == {"content": "您好，我是 Ada", "attachments": []}
    assert ada.events[-1] == reply and reply["seq"] == 2
    assert w.router.replay("d1")[-1]["operator"] == "ada"  # in the transcript


def test_the_users_later_messages_reach_the_operator_with_seq(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("人工")
    w.reply("ada", "d1", "hello")
    w.say("my order is late", message_id="m2")
    forwarded = ada.events[-1]
    assert forwarded["event_type"] == 1001 and forwarded["seq"] == 3
    assert forwarded["message_id"] == "m2"
    assert forwarded["messages"]["content"] == "my order is late"


def test_done_ends_the_turn_with_2002_completed_and_frees_the_operator(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("人工")
    assert w.done("ada", "d1") is None
    ended = w.to_user("d1")[-1]
    assert ended["event_type"] == 2002 and ended["reason"] == "completed"
    assert ada.events[-1] == ended
    assert w.router.instances() == [] and w.desk.operators()[0].dialogs == []
    w.say("echo this", message_id="m2")  # the next turn routes anew
    assert w.node.started[-1].program == "echo"


def test_only_the_assigned_operator_may_write(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.connect("ada")
    w.say("人工")
    bob = w.connect("bob")
    before = len(w.router.replay("d1"))
    for answer in (w.reply("bob", "d1", "not mine"), w.done("bob", "d1"),
                   w.reply("bob", "nosuch", "x")):
        assert answer["event_type"] == 2004 and answer["code"] == codes.BAD_REQUEST
    assert len(w.router.replay("d1")) == before and bob.of(2001) == []
    bad = w.desk.operator_event("ada", {"event_type": 3102, "dialog_id": "d1",
                                        "messages": {"content": 7}})
    assert bad["code"] == codes.BAD_REQUEST and len(w.router.replay("d1")) == before


def test_a_queued_dialog_cannot_be_written_by_anyone(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=1)
    w.connect("ada")
    w.say("人工")
    w.say("人工", dialog_id="d2", user_id="u2")
    assert w.reply("ada", "d2", "x")["code"] == codes.BAD_REQUEST


def test_an_operator_away_for_30s_loses_their_dialogs_to_the_queue_head(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=2)
    ada = w.connect("ada")
    w.say("human", dialog_id="d1")
    w.say("human", dialog_id="d2", user_id="u2")
    w.say("human", dialog_id="d3", user_id="u3")  # queued behind ada's two
    w.desk.operator_gone("ada", ada)
    w.clock.advance(29.9)
    assert w.desk.assigned_to("d1") == "ada"
    w.clock.advance(0.2)
    assert [t.dialog_id for t in w.desk.queue()] == ["d1", "d2", "d3"]
    told = w.to_user("d1")[-1]
    assert told["status"] == "queued" and told["place"] == 1
    bob = w.connect("bob")
    assert assigned(bob) == ["d1", "d2"]
    transcript = bob.of(3101)[0]["transcript"]
    assert transcript[0]["messages"]["content"] == "human"
    assert w.reply("ada", "d1", "too late")["code"] == codes.BAD_REQUEST


def test_an_operator_back_within_30s_keeps_their_dialogs(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("human")
    w.desk.operator_gone("ada", ada)
    w.clock.advance(29)
    again = w.connect("ada")
    w.clock.advance(60)
    assert w.desk.assigned_to("d1") == "ada"
    assert again.events[0]["dialogs"] == ["d1"] and assigned(again) == ["d1"]
    assert w.reply("ada", "d1", "still here") is None


def test_one_of_two_sockets_closing_does_not_start_the_30s(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    one, two = w.connect("ada"), w.connect("ada")
    w.say("human")
    assert assigned(one) == assigned(two) == ["d1"]
    w.desk.operator_gone("ada", one)
    w.clock.advance(120)
    assert w.desk.assigned_to("d1") == "ada"


def test_no_operator_within_wait_answers_2003_with_the_users_message(tmp_path: Path) -> None:
    w = Desk(tmp_path, wait=120)
    w.say("人工")
    w.clock.advance(119)
    assert w.to_user("d1")[-1]["event_type"] == 2001
    w.clock.advance(1)
    declined = w.to_user("d1")[-1]
    assert declined["event_type"] == 2003 and declined["messages"]["content"] == "人工"
    assert declined["message_id"] == "m-d1-人工"
    assert w.desk.queue() == [] and w.router.instances() == [] and w.desk.stats.timeouts == 1
    ada = w.connect("ada")
    assert assigned(ada) == []


def test_the_place_is_told_again_only_when_it_has_halved(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=1)
    for i in range(1, 6):
        w.say("human", dialog_id=f"d{i}", user_id=f"u{i}")
    assert w.to_user("d5")[-1]["place"] == 5
    ops = [w.connect(f"op{i}") for i in range(1, 4)]  # d1, d2, d3 assigned: d5 is 2nd
    assert ops and [e["place"] for e in w.to_user("d5")] == [5, 2]
    w.connect("op4")  # d4 assigned: d5 first
    assert [e["place"] for e in w.to_user("d5")] == [5, 2, 1]
    assert [e["place"] for e in w.to_user("d4")] == [4, 2, 1]
    assert [e["place"] for e in w.to_user("d3")] == [3, 1]  # 3 -> 2 is not half


def test_a_user_leaving_while_queued_counts_as_abandoned(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.say("人工")
    w.leave()
    assert w.desk.stats.abandoned == 1 and w.desk.queue() == []
    assert w.to_user("d1")[-1]["reason"] == "client_closed"


def test_a_user_leaving_an_assigned_dialog_tells_the_operator(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    ada = w.connect("ada")
    w.say("人工")
    w.leave()
    assert {"event_type": 1002, "dialog_id": "d1"} in ada.events
    assert w.desk.stats.abandoned == 0 and w.desk.operators()[0].dialogs == []


def test_the_idle_timeout_tells_the_operator_why_it_lost_the_dialog(tmp_path: Path) -> None:
    w = Desk(tmp_path, idle_timeout=600)
    ada = w.connect("ada")
    w.say("人工")
    w.clock.advance(600)
    assert w.to_user("d1")[-1]["reason"] == "idle_timeout"
    assert ada.events[-1] == {"event_type": 3105, "dialog_id": "d1", "reason": "idle_timeout"}
    w.clock.advance(1)  # the fallback 3105 does not come as well
    assert len(ada.of(3105)) == 1


def test_operators_see_the_queue_change(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=1)
    ada = w.connect("ada")
    w.say("human", dialog_id="d1")
    w.say("human", dialog_id="d2", user_id="u2")
    assert [q["dialog_id"] for q in ada.of(3104)[-1]["queue"]] == ["d2"]
    w.leave("d2", "u2")
    assert ada.of(3104)[-1]["queue"] == []


def test_queue_and_assignments_survive_a_restart(tmp_path: Path) -> None:
    w = Desk(tmp_path, max_per_operator=1, wait=300)
    ada = w.connect("ada")
    w.say("human", dialog_id="d1")
    w.say("human", dialog_id="d2", user_id="u2")
    w.reply("ada", "d1", "hi")
    w.clock.advance(100)
    w.router.stop()
    # a new server over the same dialogs and the same journal directory
    again = Desk(tmp_path, clock=w.clock, store=w.store,
                 book=JournalBook(tmp_path / "operators", run_inline))
    assert [e["event_type"] for e in again.to_user("d1")] == []  # no 2002 program_exited
    assert [t.dialog_id for t in again.desk.queue()] == ["d2"]
    assert again.desk.assigned_to("d1") == "ada"
    back = again.connect("ada")
    assert back.events[0]["dialogs"] == ["d1"] and assigned(back) == ["d1"]
    assert [e["event_type"] for e in back.of(3101)[0]["transcript"]] == [1001, 2001]
    assert again.reply("ada", "d1", "I am back") is None
    assert again.to_user("d1")[-1]["operator"] == "ada"
    again.clock.advance(199)  # d2's wait runs on from when it was queued
    assert again.to_user("d2")[-1:] == []
    again.clock.advance(1)
    assert again.to_user("d2")[-1]["event_type"] == 2003
    del ada


def test_an_operator_gone_across_a_restart_has_30s_to_come_back(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.connect("ada")
    w.say("human")
    w.router.stop()
    again = Desk(tmp_path, clock=w.clock, store=w.store,
                 book=JournalBook(tmp_path / "operators", run_inline))
    again.clock.advance(30)
    assert [t.dialog_id for t in again.desk.queue()] == ["d1"]
    assert again.to_user("d1")[-1]["status"] == "queued"


def test_a_crash_without_a_clean_stop_resumes_too(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.say("human")  # queued; no stop(): the process died
    again = Desk(tmp_path, clock=w.clock, store=w.store,
                 book=JournalBook(tmp_path / "operators", run_inline))
    assert [t.dialog_id for t in again.desk.queue()] == ["d1"]
    assert again.to_user("d1") == []
    ada = again.connect("ada")
    assert assigned(ada) == ["d1"]


def test_a_dialog_the_book_does_not_know_ends_as_before(tmp_path: Path) -> None:
    w = Desk(tmp_path)
    w.say("human")
    w.router.stop()
    again = Desk(tmp_path, clock=w.clock, store=w.store, book=MemoryBook())
    ended = again.to_user("d1")[-1]
    assert ended["event_type"] == 2002 and ended["reason"] == "program_exited"
