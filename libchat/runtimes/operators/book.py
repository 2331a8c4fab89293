"""Where the operator desk keeps its queue and assignments across restarts.

:class:`IOperatorBook` is the seam (a Redis book plugs in here for several
nodes, docs/scaleout.md); :class:`JournalBook` keeps them in
``DATA/.operators/`` with the CRC-checked, group-committed
:class:`~libchat.storage.journal.Journal`. A ticket is stored whole on every
change (``k: "t"``), and forgotten with ``k: "x"``; both are idempotent, so
replaying a segment twice (a crash inside a compaction) gives the same state.
Queue order is the tickets' ``rank``: a dialog put back at the head of the
queue gets a rank below every other one.

Writes go behind (with the next group commit, a few ms): a ``kill -9`` in that
window can forget the newest change, which costs the dialog a fresh place in
the queue, never the dialog (its transcript is in the dialog store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from libchat.storage.journal import Journal

STATE = "tickets"


class IOperatorBook(Interface):
    """The desk's durable state: one dict per queued or assigned dialog."""

    def load() -> list[dict[str, Any]]:
        """The tickets a previous run kept, by rank (queue order)."""

    def put(ticket: dict[str, Any]) -> None:
        """Keep a ticket's current state (``dialog_id`` is its key)."""

    def drop(dialog_id: str) -> None:
        """Forget a dialog's ticket (its assignment or wait is over)."""

    def compact() -> Any:
        """Store the state compactly; may return a Deferred."""

    def settle() -> Any:
        """A Deferred (or None) that fires once every change so far is durable."""


@implementer(IOperatorBook)
class MemoryBook:
    """An in-memory book: tests, and a desk that needs no durability."""

    def __init__(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}

    def load(self) -> list[dict[str, Any]]:
        return sorted((dict(t) for t in self.tickets.values()), key=lambda t: t["rank"])

    def put(self, ticket: dict[str, Any]) -> None:
        self.tickets[ticket["dialog_id"]] = dict(ticket)

    def drop(self, dialog_id: str) -> None:
        self.tickets.pop(dialog_id, None)

    def compact(self) -> Any:
        return None

    def settle(self) -> Any:
        return None


@implementer(IOperatorBook)
class JournalBook(MemoryBook):
    log = Logger()

    def __init__(self, directory: Path, run_io: Callable[..., "defer.Deferred[Any]"]) -> None:
        super().__init__()
        self.run_io = run_io
        self.journal = Journal(Path(directory), run_io)
        for ticket in (self.journal.pending.get(STATE) or []):
            self.tickets[ticket["dialog_id"]] = ticket
        for entry in self.journal.replay():
            if entry.get("k") == "t" and isinstance(entry.get("t"), dict):
                self.tickets[entry["t"]["dialog_id"]] = entry["t"]
            elif entry.get("k") == "x":
                self.tickets.pop(str(entry.get("d")), None)

    def put(self, ticket: dict[str, Any]) -> None:
        super().put(ticket)
        self.journal.append_behind({"k": "t", "t": dict(ticket)})

    def drop(self, dialog_id: str) -> None:
        if dialog_id in self.tickets:
            super().drop(dialog_id)
            self.journal.append_behind({"k": "x", "d": dialog_id})

    def settle(self) -> "defer.Deferred[None]":
        # a write-ahead entry goes out after everything queued before it
        return self.journal.append({"k": "s"})

    def compact(self) -> "defer.Deferred[None]":
        """Every ticket into the checkpoint; the covered segments go."""
        through, lsn = self.journal.rotate()
        state = {STATE: self.load()}
        d = self.run_io(self.journal.checkpoint, through, lsn, state)
        d.addCallback(lambda _: self.journal.compact(through, lsn))
        d.addErrback(lambda f: self.log.failure("operator book compaction failed", f))
        return d
