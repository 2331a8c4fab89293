"""Dialog records and tool memory: in memory, and as ``DATA/<dialog_id>.json``.

The JSON store serialises changed records on the reactor thread (a consistent
snapshot) and writes them through ``run_io`` (a thread pool in production), each
atomically: temp file, fsync, rename, fsync of the directory. A crash leaves the
old file or the new one, never half of either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.events import valid_dialog_id
from libchat.interfaces import IStore
from libchat.jsonc import loads
from libchat.records import DialogRecord
from libchat.snapshot import RecordEncoder

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

    def take_dirty(self) -> list[DialogRecord]:
        dirty, self._dirty = list(self._dirty.values()), {}
        return dirty

    def flush(self) -> "defer.Deferred[int]":
        return defer.succeed(len(self.take_dirty()))


def write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` with ``data`` so a crash never tears it."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IStore)
class JsonFileStore(MemoryStore):
    """One ``<dialog_id>.json`` per dialog in ``directory``."""

    def __init__(self, directory: str | Path, run_io: RunIO = run_inline) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.run_io = run_io
        self._flushing: defer.Deferred[int] | None = None
        self._waiters: list[defer.Deferred[int]] = []
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
        self.log.info("loaded {count} dialogs from {directory}",
                      count=len(self._records), directory=str(self.directory))
        return list(self._records.values())

    def flush(self) -> "defer.Deferred[int]":
        """Write changed records. A call during a flush waits for the next one."""
        if self._flushing is not None:
            waiter: defer.Deferred[int] = defer.Deferred()
            self._waiters.append(waiter)
            return waiter
        batch = [(r.dialog_id, self.path_for(r.dialog_id).name, self.encoder.encode(r))
                 for r in self.take_dirty()]
        if not batch:
            return defer.succeed(0)

        def write_all() -> int:
            self.directory.mkdir(parents=True, exist_ok=True)
            for _, name, data in batch:
                write_atomic(self.directory, name, data)
            fsync_dir(self.directory)
            return len(batch)

        def done(result: Any) -> Any:
            self._flushing = None
            if isinstance(result, Failure):  # keep them dirty: the next flush retries
                for dialog_id, _, _ in batch:
                    rec = self._records.get(dialog_id)
                    if rec is not None:
                        self._dirty.setdefault(dialog_id, rec)
            waiters, self._waiters = self._waiters, []
            if waiters:
                def fan_out(r: Any) -> None:
                    for w in waiters:
                        w.errback(r) if isinstance(r, Failure) else w.callback(r)
                self.flush().addBoth(fan_out)
            return result

        d = self._flushing = self.run_io(write_all)
        d.addBoth(done)  # may run at once when run_io is synchronous
        return d
