"""The IStore contract, run against every store: the in-memory fake
(``libchat.testing.MemoryStore``, which the router's tests lean on) and the
JSON file store. A fake that passes what the real store passes is a verified
fake; what only a durable store promises (a restart) is in tests/test_store.py
and tests/hardening/test_journal.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from libchat.interfaces import IStore
from libchat.storage.records import DialogRecord
from libchat.storage.store import JsonFileStore, MemoryStore
from libchat.testing import MemoryStore as FakeStore


def record(dialog_id: str = "d1", user: str = "u1") -> DialogRecord:
    return DialogRecord(dialog_id=dialog_id, user_id=user, created_at=1.0, updated_at=1.0)


def result(d: "defer.Deferred[Any]") -> Any:
    """The result of a Deferred that has fired (the stores here do I/O inline)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class StoreContract:
    """Every IStore passes these; a subclass names the store in ``make``."""

    def make(self, tmp_path: Path) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Any:
        store = self.make(tmp_path)
        store.load()
        return store

    def test_provides_istore(self, store: Any) -> None:
        assert verifyObject(IStore, store)

    def test_added_records_are_found(self, store: Any) -> None:
        r = record()
        store.add(r)
        assert store.get("d1") is r and store.get("nope") is None

    def test_load_of_a_fresh_store_finds_nothing(self, store: Any) -> None:
        assert store.load() == [] and store.pending() == {}

    def test_conversation_ids_are_kept_per_dialog_and_program(self, store: Any) -> None:
        store.add(record())
        assert store.conversation_get("d1", "dify") is None
        store.conversation_set("d1", "dify", "c-1")
        store.conversation_set("d1", "coze", "c-2")
        store.conversation_set("nope", "dify", "c-3")  # no record: nothing kept
        assert store.conversation_get("d1", "dify") == "c-1"
        assert store.conversation_get("d1", "coze") == "c-2"
        assert store.conversation_get("nope", "dify") is None
        store.conversation_set("d1", "dify", None)
        assert store.get("d1").conversations == {"coze": "c-2"}

    def test_memory_is_scoped_by_user_and_program(self, store: Any) -> None:
        store.add(record())
        store.memory_set("u1", "hello", "name", "Bob", "d1", 5.0)
        assert store.memory_get("u1", "hello", "name") == "Bob"
        assert store.memory_get("u2", "hello", "name") is None
        assert store.memory_get("u1", "echo", "name") is None

    def test_the_latest_save_wins_across_dialogs(self, store: Any) -> None:
        store.add(record())
        store.add(record("d2"))
        store.memory_set("u1", "hello", "name", "old", "d1", 1.0)
        store.memory_set("u1", "hello", "name", "new", "d2", 2.0)
        assert store.memory_get("u1", "hello", "name") == "new"

    def test_memory_save_is_noted_in_its_dialog(self, store: Any) -> None:
        store.add(record())
        store.memory_set("u1", "hello", "k", {"deep": [1]}, "d1", 5.0)
        assert store.get("d1").memory == {"hello": {"k": {"value": {"deep": [1]}, "at": 5.0}}}

    def test_memory_set_answers_a_deferred_that_fires_when_durable(self, store: Any) -> None:
        store.add(record())
        d = store.memory_set("u1", "p", "k", 1, "d1", 1.0)
        assert isinstance(d, defer.Deferred)
        assert result(d) is None  # with inline I/O, durable at once

    def test_a_save_for_an_unknown_dialog_is_still_kept(self, store: Any) -> None:
        result(store.memory_set("u1", "p", "k", 1, "gone", 1.0))
        assert store.memory_get("u1", "p", "k") == 1

    def test_flush_counts_the_changed_records_once(self, store: Any) -> None:
        r = record()
        store.add(r)
        store.add(record("d2"))
        assert result(store.flush()) == 2
        assert result(store.flush()) == 0
        r.append({"event_type": 1001, "message_id": "m", "messages": {}, "at": 2.0}, 2.0)
        store.changed(r)
        assert result(store.flush()) == 1

    def test_pending_queue_calls_are_accepted_in_any_order(self, store: Any) -> None:
        store.pending_taken("frame", 3)  # more than queued: not an error
        store.pending_put("frame", {"event_type": 2001, "dialog_id": "d1"})
        store.pending_taken("frame", 1)
        assert all(isinstance(v, list) for v in store.pending().values())
        assert store.pending().get("frame", []) == []


class TestMemoryStore(StoreContract):
    def make(self, tmp_path: Path) -> MemoryStore:
        return MemoryStore()

    def test_the_fake_is_the_one_libchat_testing_exports(self) -> None:
        assert FakeStore is MemoryStore


class TestJsonFileStore(StoreContract):
    def make(self, tmp_path: Path) -> JsonFileStore:
        return JsonFileStore(tmp_path / "data")


class TestJsonFileStoreWithoutJournal(StoreContract):
    def make(self, tmp_path: Path) -> JsonFileStore:
        return JsonFileStore(tmp_path / "data", journal=False)
