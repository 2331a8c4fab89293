"""One transcript entry per event, and the event derived from it
(libchat.core.transcript): seqs, replays and entries."""

from __future__ import annotations

from pathlib import Path

from libchat.core.transcript import event_from_entry
from libchat.storage.records import DialogRecord

from .helpers import World, close, user_message


def test_every_transcript_entry_and_event_carries_growing_seq(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().say({"event_type": 2001, "messages": {"content": "a"}})
    w.last().say({"event_type": 2002})
    record = w.store.get("d1")
    assert [m["seq"] for m in record.messages] == [1, 2, 3]
    assert [m["event_type"] for m in record.messages] == [1001, 2001, 2002]
    assert [e["seq"] for e in w.up.events] == [2, 3]
    assert w.router.info("d1").seq == 3


def test_each_delivered_event_is_derived_from_its_one_entry(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.last().say({"event_type": 2001, "message_id": "r1",
                  "messages": {"content": "a", "attachments": []}})
    w.send(close())
    record = w.store.get("d1")
    assert len(record.messages) == 3  # 1001, 2001, 2002: one entry each
    assert w.up.events == [event_from_entry(record, e) for e in record.messages[1:]]
    reply = w.up.events[0]
    assert list(reply) == ["event_type", "dialog_id", "user_id", "seq", "message_id",
                           "messages", "program"]
    assert "at" not in reply and record.messages[1]["at"] == w.clock.seconds()


def test_event_from_entry_puts_the_records_ids_and_leaves_out_the_time() -> None:
    record = DialogRecord(dialog_id="d", user_id="u", created_at=0, updated_at=0)
    entry = {"seq": 4, "event_type": 2002, "message_id": "x", "at": 9.0, "reason": "completed"}
    assert event_from_entry(record, entry) == {
        "event_type": 2002, "dialog_id": "d", "user_id": "u", "seq": 4, "message_id": "x",
        "reason": "completed"}


def test_replay_equals_what_was_delivered_and_keeps_the_last_limit(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    for n in range(5):
        w.last().say({"event_type": 2001, "messages": {"content": f"r{n}"}})
    assert w.router.replay("d1", after=1) == w.up.events
    assert w.router.replay("d1", after=1, limit=2) == w.up.events[-2:]
    assert w.router.replay("d1", after=6) == []
    first = w.router.replay("d1")[0]
    assert (first["event_type"], first["user_id"], first["seq"]) == (1001, "u1", 1)


def test_entries_are_copies_oldest_first_with_the_first_limit(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    for n in range(3):
        w.last().say({"event_type": 2001, "messages": {"content": f"r{n}"}})
    entries = w.router.entries("d1", after=1, limit=2)
    assert [e["seq"] for e in entries] == [2, 3]
    entries[0]["seq"] = 99  # a door cannot change the transcript
    assert w.store.get("d1").messages[1]["seq"] == 2


def test_the_program_gets_the_users_event_without_intent_and_unrecorded_ids(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    event = user_message("hi there", intent="echo")
    w.send(event)
    assert w.last().sent == [{k: v for k, v in event.items() if k != "intent"}]
    entry = w.store.get("d1").messages[0]
    assert set(entry) == {"seq", "event_type", "message_id", "messages", "at"}
