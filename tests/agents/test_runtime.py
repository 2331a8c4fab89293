"""The agent runtime (libchat.runtimes.agents.runtime) with a scripted client
and a fake clock: order, concurrency, the bounded queue, retries, failures,
single_turn, 1002, the kept conversation id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import formatEvent

from libchat.core.library import ProgramLibrary
from libchat.interfaces import NoRoom
from libchat.runtimes.agents.client import HTTP_ERROR, AgentError
from libchat.runtimes.agents.runtime import AgentRuntime
from libchat.storage.memory import MemoryStore
from libchat.storage.records import DialogRecord

from tests.agents.fakes import ScriptedClient


class Owner:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def instanceConnected(self, instance: Any) -> None:
        self.log.append(("connected", None))

    def instanceEvent(self, instance: Any, event: dict[str, Any]) -> None:
        self.log.append(("event", event))

    def instanceGone(self, instance: Any, connected: bool, detail: str) -> None:
        self.log.append(("gone", (connected, detail)))

    def events(self) -> list[dict[str, Any]]:
        return [v for k, v in self.log if k == "event"]

    def replies(self) -> list[str]:
        return [e["messages"]["content"] for e in self.events() if e["event_type"] == 2001]


def msg(text: str, dialog: str = "d1") -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "user_id": "u1", "message_id": text,
            "messages": {"content": text, "attachments": []}}


class World:
    def __init__(self, tmp_path: Path, **section: Any) -> None:
        self.clock = task.Clock()
        self.client = ScriptedClient()
        self.store = MemoryStore()
        (tmp_path / "bot").mkdir()
        (tmp_path / "bot" / "package.json").write_text(json.dumps(
            {"libchat": {"runtime": "dify", "api_key": "sekrit", **section}}))
        self.runtime = AgentRuntime("dify", self.clock, lambda *a: self.client, self.store,
                                    max_waiting=section.pop("_waiting", 1000)
                                    if "_waiting" in section else 1000)
        self.library = ProgramLibrary([tmp_path])
        self.library.accept_runtimes({"dify": self.runtime})
        self.library.scan()

    def start(self, dialog: str = "d1") -> tuple[Any, Owner]:
        owner = Owner()
        self.store.add(DialogRecord(dialog_id=dialog, user_id="u1", created_at=0,
                                    updated_at=0))
        instance = self.runtime.start("bot", dialog, "u1", owner)
        self.clock.advance(0)
        return instance, owner


def test_agent_programs_do_not_count_and_have_no_pid(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    assert w.runtime.counts("bot") is False and instance.pid is None
    assert owner.log == [("connected", None)]


def test_one_turn_at_a_time_per_dialog_in_order(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    instance.send(msg("one"))
    instance.send(msg("two"))
    assert [t.query for t, _ in w.client.turns] == ["one"]
    w.client.answer(0, "A1")
    assert [t.query for t, _ in w.client.turns] == ["one", "two"]
    w.client.answer(1, "A2")
    assert owner.replies() == ["A1", "A2"]


def test_the_conversation_id_is_kept_and_sent_next_turn(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    instance.send(msg("one"))
    assert w.client.turns[0][0].conversation_id is None
    w.client.answer(0, "A1", conversation_id="conv-9")
    assert w.store.get("d1").conversations == {"bot": "conv-9"}
    instance.send(msg("two"))
    assert w.client.turns[1][0].conversation_id == "conv-9"


def test_max_concurrency_caps_turns_in_flight_fifo(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=2)
    pairs = [w.start(f"d{i}") for i in range(4)]
    for i, (instance, _) in enumerate(pairs):
        instance.send(msg(f"q{i}", f"d{i}"))
    assert w.client.in_flight() == [0, 1]
    w.client.answer(1, "x")
    assert [t.query for t, _ in w.client.turns] == ["q0", "q1", "q2"]
    assert len(w.client.in_flight()) == 2


def test_a_full_queue_refuses_new_dialogs_and_busies_bound_ones(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    w.runtime.max_waiting = 1
    for slots in [p.slots for p in w.runtime._programs.values()]:
        slots.max_waiting = 1
    a, _ = w.start("a")
    b, owner_b = w.start("b")
    a.send(msg("a1", "a"))      # in flight
    b.send(msg("b1", "b"))      # waits (the queue is now full)
    with pytest.raises(NoRoom):
        w.runtime.start("bot", "c", "u1", Owner())
    c_owner = Owner()
    w.runtime._programs["bot"].slots.max_waiting = 2
    c = w.runtime.start("bot", "c", "u1", c_owner)
    w.runtime._programs["bot"].slots.max_waiting = 1
    w.clock.advance(0)
    c.send(msg("c1", "c"))      # over the bound: a 2004 BUSY for that message
    busy = c_owner.events()[-1]
    assert (busy["event_type"], busy["code"], busy["message_id"]) == (2004, "BUSY", "c1")


def test_retryable_failures_are_retried_twice_with_back_off(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    instance.send(msg("one"))
    w.client.fail(0, AgentError(HTTP_ERROR, "HTTP 429", retryable=True, status=429))
    assert len(w.client.turns) == 1
    w.clock.advance(1.0)
    w.client.fail(1, AgentError(HTTP_ERROR, "HTTP 503", retryable=True, status=503))
    w.clock.advance(3.0)
    w.client.answer(2, "finally")
    assert owner.replies() == ["finally"]


def test_a_failure_after_the_retries_ends_the_instance_with_a_detail(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    instance.send(msg("one"))
    instance.send(msg("two"))
    for i, delay in enumerate((1.0, 3.0, 0)):
        w.client.fail(i, AgentError(HTTP_ERROR, "HTTP 500: boom", retryable=True))
        w.clock.advance(delay)
    assert owner.log[-1] == ("gone", (False, "http_error: HTTP 500: boom"))
    assert owner.replies() == [] and len(w.client.turns) == 3  # "two" was dropped
    assert w.runtime.stats.programs["bot"].failures == {"http_error": 1}


def test_single_turn_answers_then_completes(tmp_path: Path) -> None:
    w = World(tmp_path, single_turn=True)
    instance, owner = w.start()
    instance.send(msg("one"))
    w.client.answer(0, "A")
    kinds = [(k, v["event_type"] if k == "event" else v) for k, v in owner.log]
    assert kinds[1:] == [("event", 2001), ("event", 2002), ("gone", (True, "single turn answered"))]


def test_close_cancels_the_turn_in_flight_and_stops(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    instance.send(msg("one"))
    instance.send(msg("two"))
    instance.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
    assert w.client.cancels == [("task-0", "conv-0", "u1")] and w.client.cancelled == [0]
    instance.stop(1.0)
    assert owner.replies() == [] and len(w.client.turns) == 1
    assert owner.log[-1] == ("gone", (True, "stopped"))
    assert w.runtime._programs["bot"].slots.in_flight == 0


def test_paused_runtime_holds_events_until_resumed(tmp_path: Path) -> None:
    w = World(tmp_path)
    instance, owner = w.start()
    w.runtime.pauseEvents()
    instance.send(msg("one"))
    w.client.answer(0, "A")
    assert owner.replies() == []
    w.runtime.resumeEvents()
    assert owner.replies() == ["A"]


@pytest.mark.parametrize("section,why", [
    ({"api_key_env": "NOPE_NOT_SET"}, "environment variable NOPE_NOT_SET"),
    ({"api_key_file": "missing.txt"}, "cannot read api_key_file"),
    ({"api_key": "k", "api_key_env": "X"}, "exactly one of"),
    ({"api_key": "k", "timeout": 0}, "timeout must be a positive"),
    ({"api_key": "k", "response_mode": "fast"}, "response_mode"),
    ({"api_key": "k", "colour": "red"}, "unknown key"),
])
def test_a_program_that_cannot_be_served_is_unavailable(tmp_path: Path, section: dict[str, Any],
                                                        why: str, logged: Any) -> None:
    logged.allow("unavailable")
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "package.json").write_text(json.dumps(
        {"libchat": {"runtime": "dify", **section}}))
    runtime = AgentRuntime("dify", task.Clock(), lambda *a: ScriptedClient(), MemoryStore())
    library = ProgramLibrary([tmp_path])
    library.accept_runtimes({"dify": runtime})
    assert library.get("bot") is None and library.resolve("hi", "bot") is None
    assert why in library.unavailable()["bot"]
    library.scan()  # a rescan logs nothing new
    with pytest.raises(NoRoom):
        runtime.start("bot", "d", "u", Owner())
    said = [formatEvent(e) for e in logged.events if "unavailable" in str(e.get("log_format"))]
    assert len(said) == 1 and why in said[0]


def test_the_key_may_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "key.txt").write_text("from-file\n")
    (tmp_path / "bot" / "package.json").write_text(json.dumps(
        {"libchat": {"runtime": "dify", "api_key_file": "key.txt"}}))
    made: list[str] = []
    runtime = AgentRuntime("dify", task.Clock(), lambda s, k, c: made.append(k) or ScriptedClient(),
                           MemoryStore(), env={"K": "from-env"})
    library = ProgramLibrary([tmp_path])
    library.accept_runtimes({"dify": runtime})
    assert library.get("bot") is not None and made == ["from-file"]
    (tmp_path / "bot" / "package.json").write_text(json.dumps(
        {"libchat": {"runtime": "dify", "api_key_env": "K"}}))
    library.scan()
    assert made == ["from-file", "from-env"]


def test_a_client_that_cannot_be_loaded_makes_the_program_unavailable(
        tmp_path: Path, logged: Any) -> None:
    logged.allow("unavailable")
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "package.json").write_text(json.dumps(
        {"libchat": {"runtime": "coze", "bot_id": "b", "api_key": "k"}}))

    def make(section: Any, key: str, clock: Any) -> Any:
        raise ImportError("no coze", name="libchat.runtimes.agents.coze")
    runtime = AgentRuntime("coze", task.Clock(), make, MemoryStore())
    library = ProgramLibrary([tmp_path])
    library.accept_runtimes({"coze": runtime})
    assert library.get("bot") is None
    assert "cannot be loaded" in library.unavailable()["bot"]


def test_one_dialog_cannot_queue_without_bound_even_while_paused(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.runtime.max_waiting = 2
    instance, owner = w.start()
    w.runtime.pauseEvents()
    for n in range(4):
        instance.send(msg(f"m{n}"))  # m0 in flight, m1 m2 wait, m3 refused
    w.runtime.resumeEvents()
    busy = owner.events()[-1]
    assert (busy["event_type"], busy["code"], busy["message_id"]) == (2004, "BUSY", "m3")
    assert len(w.client.turns) == 1
