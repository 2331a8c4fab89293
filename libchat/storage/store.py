"""Dialog records and tool memory: in memory, and as ``DATA/<dialog_id>.json``.

The JSON store serialises changed records on the reactor thread (a consistent
snapshot) and writes them through ``run_io`` (a thread pool in production), each
atomically: temp file, fsync, rename, fsync of the directory. A crash leaves the
old file or the new one, never half of either.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.storage.atomic import fsync_dir, write_atomic
from libchat.protocol.events import valid_dialog_id
from libchat.interfaces import IStore
from libchat.storage.journal import Journal
from libchat.jsonc import loads
from libchat.storage.records import DialogRecord
from libchat.storage.snapshot import RecordEncoder

RunIO = Callable[..., "defer.Deferred[Any]"]


def run_inline(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
    """Run blocking I/O right away (tests, tiny deployments)."""
    return defer.maybeDeferred(f, *args)


@implementer(IStore)
class MemoryStore:
    """Keeps everything in memory; the base of the file store and a test fake."""

    log = Logger()

    def __init__(self) -> None:
        self._records: dict[str, DialogRecord] = {}
        self._dirty: dict[str, DialogRecord] = {}
        # (user, program, key) -> (at, value): newest save wins across dialogs
        self._memory: dict[tuple[str, str, str], tuple[float, Any]] = {}

    def load(self) -> list[DialogRecord]:
        return list(self._records.values())

    def get(self, dialog_id: str) -> DialogRecord | None:
        return self._records.get(dialog_id)

    def add(self, record: DialogRecord) -> None:
        self._records[record.dialog_id] = record
        self.changed(record)

    def changed(self, record: DialogRecord) -> None:
        self._dirty[record.dialog_id] = record

    def records(self) -> list[DialogRecord]:
        return list(self._records.values())

    def memory_get(self, user_id: str, program: str, key: str) -> Any:
        hit = self._memory.get((user_id, program, key))
        return None if hit is None else hit[1]

    def memory_set(
        self, user_id: str, program: str, key: str, value: Any, dialog_id: str, now: float = 0.0
    ) -> "defer.Deferred[None]":
        self._memory[(user_id, program, key)] = (now, value)
        record = self._records.get(dialog_id)
        if record is not None:
            record.remember(program, key, value, now)
            self.changed(record)
        return defer.succeed(None)

    def _index(self, record: DialogRecord) -> None:
        for program, keys in record.memory.items():
            for key, item in keys.items():
                at = float(item.get("at", 0))
                slot = (record.user_id, program, key)
                if slot not in self._memory or self._memory[slot][0] <= at:
                    self._memory[slot] = (at, item.get("value"))

    # replies kept for an absent upstream: only the file store makes them durable
    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {}

    def pending_put(self, channel: str, event: dict[str, Any]) -> None:
        pass

    def pending_taken(self, channel: str, count: int) -> None:
        pass

    def take_dirty(self) -> list[DialogRecord]:
        dirty, self._dirty = list(self._dirty.values()), {}
        return dirty

    def flush(self) -> "defer.Deferred[int]":
        return defer.succeed(len(self.take_dirty()))


def snapshot_of(record: DialogRecord) -> dict[str, Any]:
    """A copy the flush thread may serialise while the reactor keeps changing
    the record: the containers are copied; entries and values are never
    mutated after they are added, so they are shared."""
    data = {name: getattr(record, name) for name in RECORD_FIELDS}  # attrs.asdict is 3x slower
    data["messages"] = list(record.messages)
    data["memory"] = {p: dict(keys) for p, keys in record.memory.items()}
    return data


SNAPSHOT_CHUNK = 500  # records copied per reactor turn during a flush
RECORD_FIELDS = tuple(a.name for a in attrs.fields(DialogRecord))
# a journal "rec" entry carries the whole record but its transcript and memory
HEADER_FIELDS = tuple(f for f in RECORD_FIELDS if f not in ("dialog_id", "messages", "memory"))


@implementer(IStore)
class JsonFileStore(MemoryStore):
    """One ``<dialog_id>.json`` per dialog in ``directory``, plus a journal
    (:mod:`libchat.storage.journal`) of what changed since: memory saves (the 200
    waits for its fsync), transcript/state changes and the pending reply
    queues (written behind, within one group commit)."""

    def __init__(self, directory: str | Path, run_io: RunIO = run_inline,
                 journal: bool = True,
                 pause: Callable[[], "defer.Deferred[Any]"] | None = None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.run_io = run_io
        self.pause = pause  # yields to the reactor between snapshot chunks
        self._flushing: defer.Deferred[int] | None = None
        self._waiters: list[defer.Deferred[int]] = []
        self.journal = Journal(self.directory / ".journal", run_io) if journal else None
        if self.journal is not None:
            self.journal.collect = self._deltas
        self._notes: dict[str, DialogRecord] = {}  # changed since last journaled
        self._journaled: dict[str, tuple[Any, ...]] = {}  # dialog -> header last journaled
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self._checkpointed = -1  # journal.appended at the last checkpoint
        # encodes each transcript entry once: flushes cost what changed
        self.encoder = RecordEncoder()

    def path_for(self, dialog_id: str) -> Path:
        # dialog ids are validated at the door; this is the last line of defence
        if not valid_dialog_id(dialog_id):
            raise ValueError(f"unsafe dialog id {dialog_id!r}")
        return self.directory / f"{dialog_id}.json"

    def load(self) -> list[DialogRecord]:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                record = DialogRecord.from_json(loads(path.read_bytes()))
                if path.name != f"{record.dialog_id}.json":
                    raise ValueError("file name does not match its dialog_id")
            except Exception as e:  # a bad file must not stop the server
                self.log.error("skipping unreadable dialog file {path}: {error}",
                               path=str(path), error=repr(e))
                continue
            self._records[record.dialog_id] = record
            self._index(record)
        for stale in self.directory.glob(".*.json.tmp"):
            stale.unlink(missing_ok=True)
        replayed = self._replay() if self.journal is not None else 0
        for record in self._records.values():
            self._journaled[record.dialog_id] = self._header(record)
        self.log.info("loaded {count} dialogs from {directory} ({replayed} journal entries)",
                      count=len(self._records), directory=str(self.directory),
                      replayed=replayed)
        return list(self._records.values())

    # -- journal -----------------------------------------------------------------

    @staticmethod
    def _header(record: DialogRecord) -> tuple[Any, ...]:
        return tuple(getattr(record, f) for f in HEADER_FIELDS if f != "updated_at")

    def changed(self, record: DialogRecord) -> None:
        super().changed(record)
        if self.journal is not None:
            self._notes[record.dialog_id] = record
            self.journal.kick()

    def _deltas(self) -> list[dict[str, Any]]:
        """Journal entries for what changed in records since last journaled."""
        notes, self._notes = self._notes, {}
        out = []
        for dialog_id, record in notes.items():
            before = self._journaled.get(dialog_id)
            header = self._header(record)
            new = record.seq - (before[-1] if before else 0)
            if header == before:
                continue
            self._journaled[dialog_id] = header
            out.append({"t": "rec", "d": dialog_id,
                        "h": {f: getattr(record, f) for f in HEADER_FIELDS},
                        "m": record.messages[-new:] if new > 0 else []})
        return out

    def _replay(self) -> int:
        assert self.journal is not None
        for channel, events in self.journal.pending.items():
            self._pending[channel] = deque(events)
        count = 0
        for entry in self.journal.replay():
            try:
                self._apply(entry)
                count += 1
            except Exception as e:  # one bad entry must not stop the server
                self.log.error("skipping a bad journal entry: {error}", error=repr(e))
        return count

    def _apply(self, entry: dict[str, Any]) -> None:
        kind = entry["t"]
        if kind == "pq":
            self._pending.setdefault(entry["c"], deque()).append(entry["e"])
        elif kind == "pt":
            queue = self._pending.get(entry["c"], deque())
            for _ in range(min(int(entry["n"]), len(queue))):
                queue.popleft()
        elif kind == "mem":
            slot = (entry["u"], entry["p"], entry["k"])
            if slot not in self._memory or self._memory[slot][0] <= entry["at"]:
                self._memory[slot] = (entry["at"], entry["v"])
            record = self._records.get(entry["d"])
            if record is not None:
                record.remember(entry["p"], entry["k"], entry["v"], entry["at"])
                self._dirty[record.dialog_id] = record
        elif kind == "rec":
            self._apply_record(entry["d"], entry["h"], entry["m"])

    def _apply_record(self, dialog_id: str, header: dict[str, Any],
                      messages: list[dict[str, Any]]) -> None:
        self.path_for(dialog_id)  # refuses an id that is not a safe file name
        record = self._records.get(dialog_id)
        if record is None:
            record = self._records[dialog_id] = DialogRecord(
                dialog_id=dialog_id, user_id=header["user_id"],
                created_at=header["created_at"], updated_at=header["updated_at"])
        if header["seq"] >= record.seq:  # an older entry never rolls a record back
            for f in HEADER_FIELDS:
                if f != "seq" and f in header:  # entries of older versions lack some
                    setattr(record, f, header[f])
        for m in messages:
            if int(m["seq"]) > record.seq:
                record.messages.append(m)
                record.seq = int(m["seq"])
        self._dirty[dialog_id] = record

    def memory_set(
        self, user_id: str, program: str, key: str, value: Any, dialog_id: str, now: float = 0.0
    ) -> "defer.Deferred[None]":
        """Answered once the save is in the journal and fsynced."""
        if self.journal is None:
            return super().memory_set(user_id, program, key, value, dialog_id, now)
        d = self.journal.append({"t": "mem", "u": user_id, "p": program, "k": key,
                                 "v": value, "d": dialog_id, "at": now})
        super().memory_set(user_id, program, key, value, dialog_id, now)
        return d

    # -- pending replies ---------------------------------------------------------

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {c: list(q) for c, q in self._pending.items() if q}

    def pending_put(self, channel: str, event: dict[str, Any]) -> None:
        self._pending.setdefault(channel, deque()).append(event)
        self._journal_behind({"t": "pq", "c": channel, "e": event})

    def pending_taken(self, channel: str, count: int) -> None:
        queue = self._pending.get(channel, deque())
        for _ in range(min(count, len(queue))):
            queue.popleft()
        self._journal_behind({"t": "pt", "c": channel, "n": count})

    def _journal_behind(self, entry: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.append(entry).addErrback(
                lambda f: self.log.failure("journaling a pending reply failed", f))

    # -- snapshots ---------------------------------------------------------------

    def flush(self) -> "defer.Deferred[int]":
        """Write changed records, then a journal checkpoint that lets the
        journal drop what the files now hold. The reactor only copies
        containers, ``SNAPSHOT_CHUNK`` records per turn when ``pause`` is
        given; serialising and writing happen in ``run_io``. A call during a
        flush waits for the next one."""
        if self._flushing is not None:
            waiter: defer.Deferred[int] = defer.Deferred()
            self._waiters.append(waiter)
            return waiter
        records = self.take_dirty()
        journal = self.journal
        cut, lsn, pending = 0, 0, {}
        if journal is not None and journal.appended != self._checkpointed:
            self._checkpointed = journal.appended
            (cut, lsn), pending = journal.rotate(), self.pending()
        if not records and not cut:
            return defer.succeed(0)

        def done(result: Any) -> Any:
            self._flushing = None
            if isinstance(result, Failure):  # keep them dirty: the next flush retries
                self._checkpointed = -1
                for rec in records:
                    if self._records.get(rec.dialog_id) is rec:
                        self._dirty.setdefault(rec.dialog_id, rec)
            elif cut and journal is not None:
                journal.compact(cut, lsn)
            waiters, self._waiters = self._waiters, []
            if waiters:
                def fan_out(r: Any) -> None:
                    for w in waiters:
                        w.errback(r) if isinstance(r, Failure) else w.callback(r)
                self.flush().addBoth(fan_out)
            return result

        d = self._flushing = self._write(records, cut, lsn, pending)
        d.addBoth(done)  # may run at once when run_io is synchronous
        return d

    @defer.inlineCallbacks
    def _write(self, records: list[DialogRecord], cut: int, lsn: int,
               pending: dict[str, list[dict[str, Any]]]) -> Any:
        batch: list[tuple[str, dict[str, Any], list[Any]]] = []
        for start in range(0, len(records), SNAPSHOT_CHUNK):
            if start and self.pause is not None:
                # a record copied a turn later is only newer than the cut:
                # replaying the journal over it never rolls it back
                yield self.pause()
            batch.extend((r.dialog_id, snapshot_of(r), r.messages)
                         for r in records[start:start + SNAPSHOT_CHUNK])
        journal = self.journal
        encoder = self.encoder  # used by the flush thread only, one flush at a time

        def write_all() -> int:
            self.directory.mkdir(parents=True, exist_ok=True)
            for dialog_id, data, source in batch:  # path_for refuses an unsafe id
                write_atomic(self.directory, self.path_for(dialog_id).name,
                             encoder.encode_data(data, source))
            fsync_dir(self.directory)
            if cut and journal is not None:
                journal.checkpoint(cut, lsn, pending)
            return len(batch)

        written = yield self.run_io(write_all)
        return written
