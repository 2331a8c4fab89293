"""What only the JSON file store does: files, restarts, failures. The IStore
contract every store passes is tests/contracts/test_store_contract.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from libchat.storage.records import DialogRecord
from libchat.storage.store import JsonFileStore

from .helpers import tmp_dir
from .logcheck import LogCheckMixin


def record(dialog_id: str = "d1", user: str = "u1") -> DialogRecord:
    return DialogRecord(dialog_id=dialog_id, user_id=user, created_at=1.0, updated_at=1.0)


class TestJsonFileStore(LogCheckMixin, SynchronousTestCase):
    def make(self, tmp_path: Path) -> JsonFileStore:
        store = JsonFileStore(tmp_path / "data")
        store.load()
        return store

    def test_flush_writes_changed_dialogs_with_the_contract_fields(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        r = record()
        r.append({"event_type": 1001, "message_id": "m", "messages": {"content": "x"},
                  "at": 2.0}, 2.0)
        store.add(r)
        assert self_result(store.flush()) == 1
        data = json.loads((tmp_path / "data" / "d1.json").read_text())
        for field in ("dialog_id", "user_id", "program", "state", "created_at",
                      "updated_at", "messages", "memory"):
            assert field in data
        assert data["messages"][0]["seq"] == 1
        assert self_result(store.flush()) == 0  # nothing changed since

    def test_files_are_owner_only_and_no_temp_file_remains(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        store.add(record())
        self_result(store.flush())
        path = tmp_path / "data" / "d1.json"
        assert path.stat().st_mode & 0o777 == 0o600
        # .journal/ is the store's write-ahead journal (libchat.storage.journal)
        assert [p.name for p in (tmp_path / "data").iterdir()
                if p.name != ".journal"] == ["d1.json"]

    def test_restart_reads_back_dialogs_and_memory(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        store.add(record())
        store.add(record("d2"))
        store.memory_set("u1", "hello", "name", "old", "d1", 1.0)
        store.memory_set("u1", "hello", "name", "new", "d2", 2.0)
        self_result(store.flush())
        again = JsonFileStore(tmp_path / "data")
        assert {r.dialog_id for r in again.load()} == {"d1", "d2"}
        assert again.memory_get("u1", "hello", "name") == "new"  # newest save wins

    def test_a_kept_conversation_id_survives_a_crash_through_the_journal(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        store.add(record())
        self_result(store.flush())
        store.conversation_set("d1", "dify", "conv-1")  # journaled, no snapshot since
        again = JsonFileStore(tmp_path / "data")
        again.load()
        assert again.conversation_get("d1", "dify") == "conv-1"

    def test_a_corrupt_file_is_skipped_not_fatal(self) -> None:
        tmp_path = tmp_dir(self)
        self.allow_log("skipping unreadable dialog file")
        store = self.make(tmp_path)
        store.add(record())
        self_result(store.flush())
        (tmp_path / "data" / "bad.json").write_text("{not json")
        (tmp_path / "data" / "liar.json").write_text(json.dumps(record("other").to_json()))
        again = JsonFileStore(tmp_path / "data")
        assert [r.dialog_id for r in again.load()] == ["d1"]

    def test_interrupted_write_leaves_the_old_file(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        r = record()
        store.add(r)
        self_result(store.flush())
        before = (tmp_path / "data" / "d1.json").read_bytes()
        r.program = "changed"
        store.changed(r)

        def crash(*a: object) -> None:
            raise OSError("disk on fire")

        patched = self.patch(os, "replace", crash)
        failure = []
        store.flush().addErrback(failure.append)
        assert failure and (tmp_path / "data" / "d1.json").read_bytes() == before
        patched.restore()
        assert self_result(store.flush()) == 1  # kept dirty, retried
        assert json.loads((tmp_path / "data" / "d1.json").read_text())["program"] == "changed"

    def test_hostile_ids_never_become_paths(self) -> None:
        tmp_path = tmp_dir(self)
        store = self.make(tmp_path)
        for bad in ("../x", "..", "a/b", ".hidden"):
            self.assertRaises(ValueError, store.path_for, bad)

    def test_flush_during_flush_waits_and_writes_later_changes(self) -> None:
        tmp_path = tmp_dir(self)
        pending: list[defer.Deferred] = []
        calls: list = []

        def slow_io(f, *args):
            d = defer.Deferred()
            pending.append(d)
            calls.append((f, args))
            return d

        # without the journal, whose writes would share slow_io (its own
        # single-writer rule is tested in tests/hardening/test_journal.py)
        store = JsonFileStore(tmp_path / "data", run_io=slow_io, journal=False)
        store.load()
        store.add(record())
        first = store.flush()
        store.add(record("d2"))
        second = store.flush()
        assert len(pending) == 1  # never two writers at once
        pending[0].callback(calls[0][0]())
        assert len(pending) == 2
        pending[1].callback(calls[1][0]())
        assert self_result(first) == 1 and self_result(second) == 1
        assert (tmp_path / "data" / "d2.json").exists()


def self_result(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "deferred did not fire"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]
