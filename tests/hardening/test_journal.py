"""The journal: an acknowledged memory save, a transcript change and a queued
reply survive a crash (a store dropped without flushing), and snapshots
compact the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer

from libchat.storage.journal import decode_line, encode_line
from libchat.storage.records import FOREGROUND, DialogRecord
from libchat.storage.store import JsonFileStore


class HeldIO:
    """A run_io whose calls wait until the test releases them (one disk write
    in flight, like the thread pool, but under the test's control)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def release(self) -> None:
        f, args, d = self.calls.pop(0)
        try:
            result = f(*args)
        except Exception:
            d.errback()
        else:
            d.callback(result)


def held_store(tmp: Path) -> tuple[JsonFileStore, HeldIO]:
    """A store with one dialog whose writes wait for the test; nothing in flight."""
    io = HeldIO()
    store = JsonFileStore(tmp, run_io=io)
    store.load()
    dialog(store)
    while io.calls:
        io.release()
    return store, io


def dialog(store: JsonFileStore, dialog_id: str = "d1", user: str = "u1") -> DialogRecord:
    record = DialogRecord(dialog_id=dialog_id, user_id=user, created_at=1.0, updated_at=1.0)
    store.add(record)
    return record


def reopen(path: Path) -> JsonFileStore:
    """What a restart after kill -9 sees: a new store over the same files."""
    store = JsonFileStore(path)
    store.load()
    return store


def test_save_is_acknowledged_only_after_its_journal_write(tmp_path: Path) -> None:
    store, io = held_store(tmp_path)
    d = store.memory_set("u1", "memo", "k", {"v": 1}, "d1", 2.0)
    assert not d.called, "acknowledged before the write ran"
    io.release()
    assert d.called
    assert reopen(tmp_path).memory_get("u1", "memo", "k") == {"v": 1}


def test_concurrent_saves_share_one_write(tmp_path: Path) -> None:
    store, io = held_store(tmp_path)
    first = store.memory_set("u1", "memo", "k0", 0, "d1", 2.0)
    saves = [store.memory_set("u1", "memo", f"k{n}", n, "d1", 2.0) for n in range(1, 50)]
    assert len(io.calls) == 1  # the first write is in flight; the rest wait
    io.release()
    assert first.called and not any(d.called for d in saves)
    assert len(io.calls) == 1  # ... and then go out together
    io.release()
    assert all(d.called for d in saves)
    again = reopen(tmp_path)
    assert [again.memory_get("u1", "memo", f"k{n}") for n in range(50)] == list(range(50))


def test_crash_before_any_snapshot_keeps_dialog_transcript_memory_and_pending(
        tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.load()
    record = dialog(store)
    record.program, record.state = "memo", FOREGROUND
    record.append({"event_type": 1001, "message_id": "m1",
                   "messages": {"content": "hi", "attachments": []}, "at": 2.0}, 2.0)
    store.changed(record)
    store.memory_set("u1", "memo", "k", "v", "d1", 3.0)
    store.pending_put("frame", {"event_type": 2001, "dialog_id": "d1", "n": 1})
    store.pending_put("frame", {"event_type": 2001, "dialog_id": "d1", "n": 2})
    store.pending_taken("frame", 1)
    assert not list(tmp_path.glob("*.json")), "no snapshot was meant to be written"

    again = reopen(tmp_path)
    back = again.get("d1")
    assert back is not None
    assert (back.user_id, back.program, back.state) == ("u1", "memo", FOREGROUND)
    assert [m["message_id"] for m in back.messages] == ["m1"]
    assert back.memory["memo"]["k"]["value"] == "v"
    assert again.memory_get("u1", "memo", "k") == "v"
    assert again.pending() == {"frame": [{"event_type": 2001, "dialog_id": "d1", "n": 2}]}


def test_flush_compacts_the_journal_and_keeps_everything(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    store.load()
    dialog(store)
    store.memory_set("u1", "memo", "k", 1, "d1", 2.0)
    store.pending_put("frame", {"event_type": 2002, "dialog_id": "d1"})
    journal = tmp_path / ".journal"
    assert list(journal.glob("*.log"))
    store.flush()
    store.journal.kick()  # type: ignore[union-attr]
    assert not list(journal.glob("*.log")), "segments covered by the snapshot remain"
    assert (journal / "checkpoint.json").exists()
    again = reopen(tmp_path)
    assert again.memory_get("u1", "memo", "k") == 1
    assert again.pending() == {"frame": [{"event_type": 2002, "dialog_id": "d1"}]}
    # the next changes go to a fresh segment and are replayed after the checkpoint
    again.memory_set("u1", "memo", "k", 2, "d1", 3.0)
    assert reopen(tmp_path).memory_get("u1", "memo", "k") == 2


def test_old_journal_never_rolls_back_a_newer_snapshot(tmp_path: Path) -> None:
    """A crash between the snapshot and the deletion of covered segments:
    replaying them again must not undo later changes."""
    store = JsonFileStore(tmp_path)
    store.load()
    record = dialog(store)
    record.state = FOREGROUND
    record.append({"event_type": 1001, "message_id": "m1", "messages": {}, "at": 1}, 1)
    store.changed(record)
    store.memory_set("u1", "memo", "k", "old", "d1", 2.0)
    segments = {p.name: p.read_bytes() for p in (tmp_path / ".journal").glob("*.log")}
    record.state = "open"
    record.append({"event_type": 2002, "message_id": "m2", "messages": {}, "at": 3}, 3)
    store.changed(record)
    store.memory_set("u1", "memo", "k", "new", "d1", 4.0)
    store.flush()
    (tmp_path / ".journal" / "checkpoint.json").unlink()  # as if the crash came first
    for name, data in segments.items():
        (tmp_path / ".journal" / name).write_bytes(data)
    again = reopen(tmp_path)
    back = again.get("d1")
    assert back is not None and back.state == "open" and back.seq == 2
    assert again.memory_get("u1", "memo", "k") == "new"


def test_torn_last_line_is_ignored_and_corrupt_middle_line_skipped(
        tmp_path: Path, logged: Any) -> None:
    logged.allow("corrupt line")
    store = JsonFileStore(tmp_path)
    store.load()
    dialog(store)
    for n in range(3):
        store.memory_set("u1", "memo", f"k{n}", n, "d1", 2.0)
    (segment,) = (tmp_path / ".journal").glob("*.log")
    lines = segment.read_bytes().splitlines(keepends=True)
    key1 = next(i for i, line in enumerate(lines) if b'"k1"' in line)
    lines[key1] = lines[key1].replace(b'"k1"', b'"kX"')  # checksum no longer matches
    segment.write_bytes(b"".join(lines) + encode_line({"t": "mem"})[:-7])  # torn tail
    again = reopen(tmp_path)
    assert again.memory_get("u1", "memo", "k0") == 0
    assert again.memory_get("u1", "memo", "k1") is None
    assert again.memory_get("u1", "memo", "kX") is None
    assert again.memory_get("u1", "memo", "k2") == 2
    assert len([e for e in logged.events if e.get("log_format") ==
                "skipping a corrupt line {i} in journal segment {n}"]) == 1


def test_a_failed_snapshot_keeps_the_journal(tmp_path: Path, logged: Any) -> None:
    store = JsonFileStore(tmp_path)
    store.load()
    dialog(store)
    store.memory_set("u1", "memo", "k", "v", "d1", 2.0)
    (tmp_path / "d1.json").mkdir()  # the rename onto it fails
    failures: list[Any] = []
    store.flush().addErrback(failures.append)
    assert failures
    assert list((tmp_path / ".journal").glob("*.log"))
    (tmp_path / "d1.json").rmdir()
    assert reopen(tmp_path).memory_get("u1", "memo", "k") == "v"


def test_journal_line_checksum_round_trip() -> None:
    line = encode_line({"a": "b\nc"})
    assert line.count(b"\n") == 1
    assert decode_line(line) == {"a": "b\nc"}
    assert decode_line(line[:-3] + b"}\n") is None


def test_an_entry_queued_before_a_snapshot_but_written_after_is_not_replayed_twice(
        tmp_path: Path) -> None:
    """Pending replies are not idempotent: a queued reply that both the
    checkpoint and a later segment hold would be delivered twice."""
    io = HeldIO()
    store = JsonFileStore(tmp_path, run_io=io)
    store.load()
    store.pending_put("frame", {"event_type": 2001, "n": 1})  # write in flight
    store.pending_put("frame", {"event_type": 2001, "n": 2})  # queued behind it
    store.flush()  # the snapshot covers both
    while io.calls:
        io.release()  # the queued entry lands in the segment after the cut
    assert reopen(tmp_path).pending() == {"frame": [{"event_type": 2001, "n": 1},
                                                    {"event_type": 2001, "n": 2}]}


def test_a_chunked_snapshot_loses_no_change_made_between_chunks(tmp_path: Path) -> None:
    """The flush copies SNAPSHOT_CHUNK records per reactor turn; changes made
    meanwhile (before or after a record's copy) all survive a crash."""
    from libchat.storage.store import SNAPSHOT_CHUNK

    turns: list[defer.Deferred[None]] = []

    def pause() -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        turns.append(d)
        return d

    store = JsonFileStore(tmp_path, pause=pause)
    store.load()
    records = [dialog(store, f"d{n}") for n in range(SNAPSHOT_CHUNK * 2 + 1)]
    flushed = store.flush()
    assert len(turns) == 1 and not flushed.called, "copied everything in one turn"
    for r in (records[0], records[-1]):  # already copied / not yet copied
        r.append({"event_type": 1001, "message_id": "late", "messages": {}, "at": 5}, 5)
        store.changed(r)
    while turns:
        turns.pop(0).callback(None)
    assert flushed.called
    again = reopen(tmp_path)
    for r in (records[0], records[-1]):
        back = again.get(r.dialog_id)
        assert back is not None and [m["message_id"] for m in back.messages] == ["late"]


def test_every_record_field_survives_a_crash_before_any_snapshot(tmp_path: Path) -> None:
    """A REST session's pinned intent (and every other field of the record)
    is back after kill -9, from the journal alone: the header a ``rec`` entry
    carries must be the whole record but its transcript and memory."""
    import attrs

    store = JsonFileStore(tmp_path)
    store.load()
    record = DialogRecord(dialog_id="s1", user_id="u1", created_at=1.5, updated_at=2.5,
                          program="memo", state=FOREGROUND, channel="rest", intent="echo")
    store.add(record)
    record.append({"event_type": 1001, "message_id": "m1", "messages": {}, "at": 3.0}, 3.0)
    store.changed(record)
    store.memory_set("u1", "memo", "k", "v", "s1", 4.0)
    assert not list(tmp_path.glob("*.json")), "no snapshot was meant to be written"

    back = reopen(tmp_path).get("s1")
    assert back is not None
    for field in attrs.fields(DialogRecord):
        assert getattr(back, field.name) == getattr(record, field.name), field.name
    assert back.intent == "echo"  # the field the header used to leave out


def test_the_store_pushes_to_the_journal_which_holds_no_way_back(tmp_path: Path) -> None:
    """One-way layering: the journal is handed entries; it keeps no callable
    of the store (it once pulled the record deltas out of it)."""
    store = JsonFileStore(tmp_path)
    store.load()
    journal = store.journal
    assert journal is not None
    held = [getattr(v, "__self__", v) for v in vars(journal).values()]
    assert not any(h is store for h in held)
    record = dialog(store)
    record.append({"event_type": 1001, "message_id": "m1", "messages": {}, "at": 2}, 2)
    store.changed(record)  # pushed and written at once (inline I/O)
    entries = [e for e in journal.replay() if e["t"] == "rec"]
    assert [[m["message_id"] for m in e["m"]] for e in entries] == [[], ["m1"]]


def test_journal_alone_merges_keyed_entries_until_written(tmp_path: Path) -> None:
    from libchat.storage.journal import Journal

    io = HeldIO()
    journal = Journal(tmp_path, io)
    journal.append_behind({"t": "rec", "d": "a", "h": 1, "m": [1]}, merge_key="a")  # in flight
    journal.append_behind({"t": "rec", "d": "a", "h": 2, "m": [2]}, merge_key="a")
    journal.append_behind({"t": "pq", "c": "frame", "e": {}})
    journal.append_behind({"t": "rec", "d": "a", "h": 3, "m": [3, 4]}, merge_key="a")
    journal.append_behind({"t": "rec", "d": "b", "h": 9, "m": []}, merge_key="b")
    saved = journal.append({"t": "mem"})
    while io.calls:
        io.release()
    assert saved.called
    got = [(e["t"], e.get("h"), e.get("m")) for e in Journal(tmp_path, io).replay()]
    assert got == [("rec", 1, [1]), ("rec", 3, [2, 3, 4]), ("pq", None, None),
                   ("rec", 9, []), ("mem", None, None)]


def test_changes_to_a_dialog_during_a_write_go_out_as_one_line(tmp_path: Path) -> None:
    store, io = held_store(tmp_path)
    record = store.get("d1")
    assert record is not None
    record.state = FOREGROUND
    store.changed(record)  # this write is in flight ...
    for n in range(5):  # ... these wait for it, merged
        record.append({"event_type": 1001, "message_id": f"m{n}", "messages": {}, "at": n}, n)
        store.changed(record)
    assert len(io.calls) == 1
    io.release()
    (_, (path, data, _drop), _) = io.calls[0]
    lines = [decode_line(line) for line in data.splitlines(keepends=True)]
    assert [(e["t"], len(e["m"])) for e in lines] == [("rec", 5)]  # type: ignore[index]
    io.release()
    back = reopen(tmp_path).get("d1")
    assert back is not None and back.state == FOREGROUND
    assert [m["message_id"] for m in back.messages] == [f"m{n}" for n in range(5)]


def test_a_change_made_after_a_snapshot_started_is_not_merged_into_what_it_covers(
        tmp_path: Path) -> None:
    """A delta queued before the snapshot's cut is skipped at replay (the
    snapshot holds it); a later change merged into it would be lost."""
    store, io = held_store(tmp_path)
    record = store.get("d1")
    assert record is not None
    record.state = FOREGROUND
    store.changed(record)  # a write in flight
    record.append({"event_type": 1001, "message_id": "before", "messages": {}, "at": 1}, 1)
    store.changed(record)  # queued behind it, numbered inside the cut
    store.flush()  # copies the record now, with "before"
    record.append({"event_type": 2001, "message_id": "after", "messages": {}, "at": 2}, 2)
    store.changed(record)
    while io.calls:
        io.release()
    back = reopen(tmp_path).get("d1")
    assert back is not None
    assert [m["message_id"] for m in back.messages] == ["before", "after"]
