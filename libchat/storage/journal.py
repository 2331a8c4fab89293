"""An append-only, fsynced journal: what makes an acknowledged write survive ``kill -9``.

The periodic ``<dialog_id>.json`` snapshots are the compact form of the data;
the journal holds what changed since the last snapshot, so a crash between two
snapshots loses nothing that was acknowledged. Layout, under ``DATA/.journal/``:

- ``00000001.log``, ``00000002.log``, ...: segments of lines
  ``<crc32 as 8 hex digits> <JSON>\\n``. A torn last line (a crash mid-write)
  fails its checksum and is ignored: it was never acknowledged.
- ``checkpoint.json``: ``{"through": N, "lsn": L, "pending": {...}}``, written
  atomically after a snapshot: segments up to ``N`` and every entry numbered
  up to ``L`` are covered by the snapshot files; the segments are deleted and
  the pending reply queues are stored whole. Every entry carries its number
  (``lsn``, given when it is queued): an entry queued before a snapshot but
  written after it lands in a newer segment, and replaying it again would
  deliver a pending reply twice.

Writes go through one writer at a time (``run_io``, a thread in production):
everything queued while a write is in flight goes out in the next one, with a
single fsync (group commit). Why not one file per save: a save costs one
``fdatasync`` shared by every concurrent save, instead of a file, a rename and
two fsyncs each.

The journal is a lower layer: its owner (the file store) pushes entries to it
when something changes, and it never calls back. Entries are plain JSON
objects; what they mean is :mod:`libchat.storage.deltas`'s business.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from libchat.storage.atomic import fsync_dir, write_atomic, write_fully
from libchat.jsonc import dumps, loads

RunIO = Callable[..., "defer.Deferred[Any]"]
CHECKPOINT = "checkpoint.json"


def encode_line(entry: dict[str, Any]) -> bytes:
    body = dumps(entry)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The entry of one journal line, or None when it is torn or corrupt."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:].rstrip(b"\n")
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        entry = loads(body)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _append(path: Path, data: bytes, drop: list[Path]) -> None:
    """Runs in the writer thread: delete compacted segments, append, fdatasync."""
    for old in drop:
        old.unlink(missing_ok=True)
    if not data:
        return
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        write_fully(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    if new:  # the segment's name must be durable too
        fsync_dir(path.parent)


class Journal:
    """Group-committed appends plus replay; knows nothing about records."""

    log = Logger()

    def __init__(self, directory: Path, run_io: RunIO) -> None:
        self.directory = Path(directory)
        self.run_io = run_io
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.through = 0  # segments <= through are covered by the checkpoint
        self.lsn = 0  # entries numbered <= lsn are covered by the checkpoint
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self._read_checkpoint()
        existing = self.segments()
        self.segment = max([n for n, _ in existing] + [self.through]) + 1
        self._next_lsn = self.lsn + 1
        # queued for the next write: encoded lines, and entries still open to
        # merging (encoded when the write starts)
        self._queue: list[bytes | dict[str, Any]] = []
        self._open: dict[str, dict[str, Any]] = {}  # merge key -> its queued entry
        self._waiters: list[defer.Deferred[None]] = []
        self._behind = 0  # entries in the queue nobody waits for
        self._drop_through = 0
        self._drop_due = False
        self._busy = False
        self.appended = 0  # entries written, for benchmarks and tests

    # -- reading --------------------------------------------------------------

    def _read_checkpoint(self) -> None:
        path = self.directory / CHECKPOINT
        if not path.exists():
            return
        data = loads(path.read_bytes())
        self.through = int(data.get("through", 0))
        self.lsn = int(data.get("lsn", 0))
        self.pending = {str(k): list(v) for k, v in dict(data.get("pending", {})).items()}

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob("*.log"):
            try:
                found.append((int(path.stem), path))
            except ValueError:
                continue
        return sorted(found)

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every entry written after the checkpoint, oldest first."""
        live = [(n, p) for n, p in self.segments() if n > self.through]
        for index, (n, path) in enumerate(live):
            lines = path.read_bytes().split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            for i, line in enumerate(lines):
                entry = decode_line(line)
                if entry is None:
                    last = index == len(live) - 1 and i == len(lines) - 1
                    if last:
                        self.log.info("ignoring a torn last line in journal segment {n}", n=n)
                    else:
                        self.log.error("skipping a corrupt line {i} in journal segment {n}",
                                       i=i + 1, n=n)
                    continue
                lsn = entry.get("lsn", 0)
                self._next_lsn = max(self._next_lsn, lsn + 1)
                if lsn and lsn <= self.lsn:
                    continue  # queued before the checkpoint, written after it
                yield entry

    # -- writing --------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> "defer.Deferred[None]":
        """Write ahead: the Deferred fires once the entry is fsynced."""
        d: defer.Deferred[None] = defer.Deferred()
        self._queue.append(encode_line(self._number(entry)))
        self._waiters.append(d)
        self.kick()
        return d

    def append_behind(self, entry: dict[str, Any], merge_key: str | None = None) -> None:
        """Write behind: with the next group commit, nobody waits (a failed
        write is logged). Entries given the same ``merge_key`` before they are
        written (and since the last :meth:`rotate`) become one line: the later
        entry's fields replace the first's, except its list ``m``, which
        extends the first's. A busy dialog costs one line per write, however
        many times it changed."""
        if merge_key is not None:
            queued = self._open.get(merge_key)
            if queued is not None:
                extra = entry.pop("m", [])
                queued.update(entry)
                queued["m"].extend(extra)
                return
            entry = dict(entry, m=list(entry.get("m", [])))
            self._open[merge_key] = entry
            self._queue.append(self._number(entry))
        else:
            self._queue.append(encode_line(self._number(entry)))
        self._behind += 1
        self.kick()

    def kick(self) -> None:
        """Start a write if none is in flight (the next one takes all queued)."""
        if self._busy:
            return
        drop: list[Path] = []
        if self._drop_due:
            self._drop_due = False
            drop = [p for n, p in self.segments() if n <= self._drop_through]
        if not self._queue and not drop:
            return
        lines = [q if isinstance(q, bytes) else encode_line(q) for q in self._queue]
        waiters, behind = self._waiters, self._behind
        self._queue, self._open, self._waiters, self._behind = [], {}, [], 0
        self._busy = True
        self.appended += len(lines)
        d = self.run_io(_append, self.directory / f"{self.segment:08d}.log", b"".join(lines), drop)

        def done(result: Any) -> None:
            self._busy = False
            for w in waiters:
                w.errback(result) if isinstance(result, Failure) else w.callback(None)
            if isinstance(result, Failure) and (behind or not waiters):
                self.log.failure("journal write failed", result)
            self.kick()  # whatever queued meanwhile goes out together

        d.addBoth(done)

    def _number(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry["lsn"] = self._next_lsn
        self._next_lsn += 1
        return entry

    def rotate(self) -> tuple[int, int]:
        """Start a new segment; returns (last segment, last entry number) that
        a snapshot taken now covers. Entries queued from now on merge no more
        into earlier ones: those are numbered inside the cut, and replay skips
        them."""
        self._open = {}
        cut = self.segment
        self.segment += 1
        return cut, self._next_lsn - 1

    def checkpoint(self, through: int, lsn: int,
                   pending: dict[str, list[dict[str, Any]]]) -> None:
        """Runs in the flush thread after the snapshot files are durable."""
        write_atomic(self.directory, CHECKPOINT,
                     dumps({"through": through, "lsn": lsn, "pending": pending}))
        fsync_dir(self.directory)

    def compact(self, through: int, lsn: int) -> None:
        """Segments up to ``through`` are covered by a checkpoint: delete them
        with the next write (never while one of them is being written)."""
        self.through = max(self.through, through)
        self.lsn = max(self.lsn, lsn)
        self._drop_through = max(self._drop_through, through)
        self._drop_due = True
        self.kick()
