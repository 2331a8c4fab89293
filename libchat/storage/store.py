"""Dialog records and tool memory as ``DATA/<dialog_id>.json`` plus a journal.

A flush copies the changed records' containers on the reactor thread (a few
hundred per turn) and, in ``run_io`` (the flush thread in production),
serialises them and writes each file atomically: temp file, fsync, rename,
fsync of the directory. A crash leaves the old file or the new one, never half
of either. Between flushes, every change is pushed to the journal as it
happens (:mod:`libchat.storage.deltas`), so ``kill -9`` loses nothing that was
acknowledged (docs/durability.md).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.interfaces import IStore
from libchat.jsonc import loads
from libchat.protocol.events import valid_dialog_id
from libchat.storage.atomic import fsync_dir, write_atomic
from libchat.storage.deltas import (RecordDeltas, apply_record, mem_entry, queued_entry,
                                    taken_entry)
from libchat.storage.journal import Journal
from libchat.storage.memory import MemoryStore
from libchat.storage.records import DialogRecord
from libchat.storage.snapshot import RecordEncoder, snapshot_of

__all__ = ["JsonFileStore", "MemoryStore", "SNAPSHOT_CHUNK", "run_inline"]

RunIO = Callable[..., "defer.Deferred[Any]"]
SNAPSHOT_CHUNK = 500  # records copied per reactor turn during a flush


def run_inline(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
    """Run blocking I/O right away (tests, tiny deployments)."""
    return defer.maybeDeferred(f, *args)


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
        self._deltas = RecordDeltas()
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
            self._deltas.known(record)
        self.log.info("loaded {count} dialogs from {directory} ({replayed} journal entries)",
                      count=len(self._records), directory=str(self.directory),
                      replayed=replayed)
        return list(self._records.values())

    # -- journal -----------------------------------------------------------------

    def changed(self, record: DialogRecord) -> None:
        """Marks the record for the next snapshot and pushes what changed to
        the journal (written behind: one line per dialog per group commit)."""
        super().changed(record)
        if self.journal is not None:
            entry = self._deltas.delta(record)
            if entry is not None:
                self.journal.append_behind(entry, merge_key=record.dialog_id)

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
            self._remember(entry["u"], entry["p"], entry["k"], entry["v"], entry["at"])
            record = self._records.get(entry["d"])
            if record is not None:
                record.remember(entry["p"], entry["k"], entry["v"], entry["at"])
                self._dirty[record.dialog_id] = record
        elif kind == "rec":
            self.path_for(entry["d"])  # refuses an id that is not a safe file name
            record = apply_record(self._records, entry)
            self._dirty[record.dialog_id] = record

    def memory_set(
        self, user_id: str, program: str, key: str, value: Any, dialog_id: str, now: float = 0.0
    ) -> "defer.Deferred[None]":
        """Answered once the save is in the journal and fsynced."""
        if self.journal is None:
            return super().memory_set(user_id, program, key, value, dialog_id, now)
        d = self.journal.append(mem_entry(user_id, program, key, value, dialog_id, now))
        super().memory_set(user_id, program, key, value, dialog_id, now)
        return d

    # -- pending replies ---------------------------------------------------------

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {c: list(q) for c, q in self._pending.items() if q}

    def pending_put(self, channel: str, event: dict[str, Any]) -> None:
        self._pending.setdefault(channel, deque()).append(event)
        if self.journal is not None:
            self.journal.append_behind(queued_entry(channel, event))

    def pending_taken(self, channel: str, count: int) -> None:
        queue = self._pending.get(channel, deque())
        for _ in range(min(count, len(queue))):
            queue.popleft()
        if self.journal is not None:
            self.journal.append_behind(taken_entry(channel, count))

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
                             encoder.encode_parts(data, source))
            fsync_dir(self.directory)
            if cut and journal is not None:
                journal.checkpoint(cut, lsn, pending)
            return len(batch)

        written = yield self.run_io(write_all)
        return written
