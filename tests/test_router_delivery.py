"""Reply routing, the pending queue and backpressure (docs/protocol.md §2-3,
libchat.core.delivery), through the router over fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libchat.core.router import Router
from libchat.storage.store import MemoryStore
from libchat.testing import FakeUpstream

from .helpers import World, user_message


class PendingStore(MemoryStore):
    """A MemoryStore that keeps the pending queue, as the file store does."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, list[dict[str, Any]]] = {}

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {c: list(q) for c, q in self.kept.items() if q}

    def pending_put(self, channel: str, event: dict[str, Any]) -> None:
        self.kept.setdefault(channel, []).append(event)

    def pending_taken(self, channel: str, count: int) -> None:
        del self.kept.get(channel, [])[:count]


def world_on(tmp_path: Path, store: MemoryStore, attach: bool = True) -> World:
    """A World whose router uses ``store``."""
    w = World(tmp_path)
    w.store = store
    w.router = Router(w.clock, w.library, w.runtime, store, idle_timeout=60)
    w.router.start()
    if attach:
        w.router.attach(w.up)
    return w


def test_replies_go_to_last_sender_then_another_live_one_then_wait(tmp_path: Path) -> None:
    w = world_on(tmp_path, PendingStore())
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
    assert w.router.pending_count("frame") == 2
    assert w.store.pending()["frame"][0]["messages"]["content"] == "3"  # durable
    late = FakeUpstream()
    w.router.attach(late)
    assert [e["event_type"] for e in late.events] == [2001, 2002]
    assert late.events[0]["messages"]["content"] == "3"
    assert w.store.pending().get("frame", []) == []


def test_replies_never_fall_back_to_another_channel(tmp_path: Path) -> None:
    w = World(tmp_path)
    web = FakeUpstream(channel="web")
    w.router.attach(web)
    w.send(user_message("hello"))
    w.up.connected = False
    w.last().say({"event_type": 2001, "messages": {"content": "x"}})
    assert web.events == [] and w.router.pending_count("frame") == 1
    assert w.router.pending_count("web") == 0


def test_kept_replies_of_a_previous_run_are_handed_to_the_first_upstream(
        tmp_path: Path) -> None:
    store = PendingStore()
    store.pending_put("frame", {"event_type": 2001, "dialog_id": "old", "user_id": "u"})
    w = world_on(tmp_path, store, attach=False)
    assert w.router.pending_count("frame") == 1
    late = FakeUpstream()
    w.router.attach(late)
    assert [e["dialog_id"] for e in late.events] == ["old"]


def test_a_backlog_past_the_high_mark_pauses_runtime_events_until_drained(
        tmp_path: Path) -> None:
    w = World(tmp_path, pending_high=4)
    w.send(user_message("hello"))
    inst = w.last()
    w.up.connected = False
    for n in range(3):
        inst.say({"event_type": 2001, "messages": {"content": f"r{n}"}})
    assert not w.runtime.paused
    inst.say({"event_type": 2001, "messages": {"content": "r3"}})
    assert w.runtime.paused  # IRuntime.pauseEvents, explicitly
    w.up.connected = True
    w.router.drain(w.up)
    assert not w.runtime.paused  # IRuntime.resumeEvents
    assert [e["messages"]["content"] for e in w.up.events] == ["r0", "r1", "r2", "r3"]


def test_an_upstream_that_fills_up_mid_drain_keeps_the_rest_waiting(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.send(user_message("hello"))
    w.up.connected = False
    for n in range(3):
        w.last().say({"event_type": 2001, "messages": {"content": f"r{n}"}})

    class Small(FakeUpstream):
        def deliver(self, event: dict) -> None:
            super().deliver(event)
            self.connected = len(self.events) < 2

    small = Small()
    w.router.attach(small)
    assert len(small.events) == 2 and w.router.pending_count("frame") == 1


def test_the_oldest_pending_event_is_dropped_loudly_past_max_pending(
        tmp_path: Path, logged: object) -> None:
    logged.allow("pending queue full")  # type: ignore[attr-defined]
    w = World(tmp_path, max_pending=2)
    w.send(user_message("hello"))
    w.up.connected = False
    for n in range(3):
        w.last().say({"event_type": 2001, "messages": {"content": f"r{n}"}})
    assert w.router.pending_count("frame") == 2
    late = FakeUpstream()
    w.router.attach(late)
    assert [e["messages"]["content"] for e in late.events] == ["r1", "r2"]
