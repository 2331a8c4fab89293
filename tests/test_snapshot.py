"""RecordEncoder: dialog files equal a full encoding, built incrementally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libchat.jsonc import dumps as json_dumps
from libchat.storage import snapshot
from libchat.storage.atomic import write_atomic
from libchat.storage.records import CLOSED, DialogRecord
from libchat.storage.snapshot import RecordEncoder
from libchat.storage.store import JsonFileStore


def record(entries: int) -> DialogRecord:
    r = DialogRecord(dialog_id="d1", user_id="u1", created_at=1.0, updated_at=1.0)
    for i in range(entries):
        add(r, i)
    return r


def add(r: DialogRecord, i: int) -> None:
    r.append({"event_type": 2001, "message_id": f"m{i}", "at": 2.0 + i,
              "messages": {"content": f"héllo {i}", "attachments": []}}, 2.0 + i)


def test_file_is_the_record_as_json() -> None:
    for n in (0, 1, 5, 40):
        r = record(n)
        assert json.loads(RecordEncoder(min_cached=4).encode(r)) == r.to_json()


def test_later_flushes_encode_only_new_entries_and_stay_exact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    enc = RecordEncoder(min_cached=4)
    r = record(10)
    enc.encode(r)
    kept = enc._cache["d1"].body
    before = bytes(kept)
    encoded: list[object] = []
    monkeypatch.setattr(snapshot, "dumps", lambda e: encoded.append(e) or json_dumps(e))
    add(r, 10)
    r.remember("prog", "k", {"v": 1}, 3.0)
    data = enc.encode(r)
    assert json.loads(data) == r.to_json()
    assert encoded == [r.messages[10]]  # only the new entry was encoded
    assert enc._cache["d1"].body is kept and kept.startswith(before)  # appended to


def test_a_file_written_in_parts_equals_the_encoding(tmp_path: Path) -> None:
    enc = RecordEncoder(min_cached=4)
    r = record(40)
    write_atomic(tmp_path, "d1.json", enc.encode_parts(r.to_json(), r.messages))
    assert (tmp_path / "d1.json").read_bytes() == RecordEncoder(min_cached=4).encode(r)
    add(r, 40)  # the kept transcript grows after a write (no view of it is left)
    write_atomic(tmp_path, "d1.json", enc.encode_parts(r.to_json(), r.messages))
    assert json.loads((tmp_path / "d1.json").read_bytes()) == r.to_json()
    many = [b"%d," % i for i in range(3000)]  # more buffers than one writev takes
    write_atomic(tmp_path, "many", many)
    assert (tmp_path / "many").read_bytes() == b"".join(many)


def test_a_replaced_or_rewritten_transcript_is_encoded_afresh() -> None:
    enc = RecordEncoder(min_cached=4)
    r = record(10)
    enc.encode(r)
    r.messages = r.messages[:3] + [dict(r.messages[5], seq=99)] * 8  # another list
    assert json.loads(enc.encode(r)) == r.to_json()
    del r.messages[4:]  # same list, shorter
    assert json.loads(enc.encode(r)) == r.to_json()
    r.messages[3] = dict(r.messages[3], seq=1234)  # same length, last entry rewritten
    assert json.loads(enc.encode(r)) == r.to_json()


def test_short_transcripts_keep_no_bytes() -> None:
    enc = RecordEncoder(min_cached=32)
    enc.encode(record(3))
    assert enc.cached() == 0
    enc.encode(record(40))
    assert enc.cached() == 1
    enc.forget("d1")
    assert enc.cached() == 0


def test_values_orjson_refuses_fall_back_to_stdlib() -> None:
    r = record(2)
    r.remember("prog", "big", 2**70, 3.0)
    assert json.loads(RecordEncoder().encode(r))["memory"]["prog"]["big"]["value"] == 2**70


def test_a_closed_dialog_written_keeps_no_bytes() -> None:
    enc = RecordEncoder(min_cached=4)
    r = record(10)
    enc.encode(r)
    assert enc.cached() == 1
    r.state = CLOSED
    assert json.loads(enc.encode(r)) == r.to_json()
    assert enc.cached() == 0 and enc.entries_kept() == 0
    r.state = "open"  # reopened: encoded afresh, exactly
    add(r, 10)
    assert json.loads(enc.encode(r)) == r.to_json() and enc.cached() == 1


def test_the_cache_is_bounded_dropping_the_least_recently_written() -> None:
    enc = RecordEncoder(min_cached=4, max_entries=25)
    records = []
    for n in range(3):
        r = record(10)
        r.dialog_id = f"d{n}"
        records.append(r)
    enc.encode(records[0])
    enc.encode(records[1])
    enc.encode(records[0])  # d0 is now the most recently written
    assert enc.entries_kept() == 20
    enc.encode(records[2])  # 30 > 25: d1 goes
    assert set(enc._cache) == {"d0", "d2"} and enc.entries_kept() == 20
    for r in records:  # what is dropped is only re-encoded, never wrong
        assert json.loads(enc.encode(r)) == r.to_json()
    assert enc.entries_kept() <= 25


def test_the_file_store_drops_a_closed_dialogs_bytes_once_written(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.load()
    store.encoder.min_cached = 4
    r = record(10)
    store.add(r)
    store.flush()
    assert store.encoder.cached() == 1
    r.state = CLOSED
    store.changed(r)
    store.flush()
    assert store.encoder.cached() == 0
    assert json.loads((tmp_path / "d1.json").read_bytes()) == r.to_json()
