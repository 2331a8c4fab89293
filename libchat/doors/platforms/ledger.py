"""What the platform adapters must not forget across ``kill -9``: the outbox,
reply targets and the dedupe sets (CONTRACT section 10).

One :class:`~libchat.storage.journal.Journal` under ``DATA/.platforms/``
(CRC-checked lines, group-committed fsyncs). Entries (``k``):

- ``o`` an outbox item put or replaced whole (merging a waiting 2001 into it),
- ``p`` parts ``n`` of item ``id`` were accepted by the platform,
- ``x`` item ``id`` is finished (sent, refused for good, or given up),
- ``t`` the reply target of dialog ``d`` (``to``, ``m`` the Lark mention),
- ``s`` app ``a`` saw callback ``key`` at ``at``.

Every entry is idempotent and applied in order, so replaying one twice (a
crash between a compaction's checkpoint and its segment deletion) gives the
same state. :meth:`Ledger.compact` stores the whole state in the journal's
checkpoint (one atomic file) and drops the covered segments.

Outbox items are written ahead (``append``: a reply is on disk before its
send starts to matter); targets and dedupe ids behind (``append_behind``: a
crash in the few milliseconds before the group commit costs at most one
duplicate turn, never a lost message).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from libchat.storage.journal import Journal

from .dedupe import DedupeSet
from .seam import ICallbackBook, IOutbox
from .unified import ReplyTarget

STATE = "state"


@implementer(ICallbackBook, IOutbox)
class Ledger:
    log = Logger()

    def __init__(self, directory: Path, run_io: Callable[..., "defer.Deferred[Any]"],
                 clock: Any) -> None:
        self.clock = clock
        self.run_io = run_io
        self.journal = Journal(Path(directory), run_io)
        self.items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.targets: dict[str, dict[str, Any]] = {}
        self.dedupe: dict[str, DedupeSet] = {}
        self._load()

    # -- start -------------------------------------------------------------

    def _load(self) -> None:
        saved = (self.journal.pending.get(STATE) or [{}])[0]
        for item in saved.get("items", []):
            self.items[item["id"]] = item
        self.targets = dict(saved.get("targets", {}))
        seen: dict[str, dict[str, Any]] = dict(saved.get("dedupe", {}))
        for entry in self.journal.replay():
            kind = entry.get("k")
            if kind == "o":
                item = entry["item"]
                self.items[item["id"]] = item
            elif kind == "p" and entry.get("id") in self.items:
                self.items[entry["id"]]["n"] = entry["n"]
            elif kind == "x":
                self.items.pop(str(entry.get("id")), None)
            elif kind == "t":
                self.targets[entry["d"]] = {"to": entry["to"], "m": entry.get("m")}
            elif kind == "s":
                dump = seen.setdefault(entry["a"], {"version": 1, "entries": []})
                dump["entries"].append([entry["key"], entry["at"]])
        for app, dump in seen.items():
            self.dedupe[app] = DedupeSet.load(dump, self.clock)

    # -- dedupe --------------------------------------------------------------

    def seen(self, app: str, key: str) -> bool:
        """A repeat of ``key`` for ``app`` (True), or remember it (False)."""
        ids = self.dedupe.setdefault(app, DedupeSet(self.clock))
        if ids.seen(key):
            return True
        self.journal.append_behind({"k": "s", "a": app, "key": key, "at": self.clock.seconds()})
        return False

    def accept(self, app: str, key: str, dialog_id: str,
               reply_to: ReplyTarget | None) -> bool:
        """:class:`ICallbackBook`: :meth:`seen`, then :meth:`set_target` for a
        new id (synchronous: one node's callbacks never wait on I/O)."""
        if self.seen(app, key):
            return True
        if reply_to is not None:
            self.set_target(dialog_id, reply_to.to, reply_to.mention)
        return False

    def dedupe_hits(self, app: str) -> int:
        ids = self.dedupe.get(app)
        return ids.hits if ids is not None else 0

    # -- reply targets -------------------------------------------------------

    def target(self, dialog_id: str) -> dict[str, Any] | None:
        return self.targets.get(dialog_id)

    def set_target(self, dialog_id: str, to: str, mention: str | None) -> None:
        new = {"to": to, "m": mention}
        if self.targets.get(dialog_id) != new:
            self.targets[dialog_id] = new
            self.journal.append_behind({"k": "t", "d": dialog_id, "to": to, "m": mention})

    # -- outbox --------------------------------------------------------------

    def put(self, item: dict[str, Any]) -> "defer.Deferred[None]":
        self.items[item["id"]] = item
        return self.journal.append({"k": "o", "item": item})

    def progress(self, item: dict[str, Any], parts_done: int) -> None:
        item["n"] = parts_done
        self.journal.append_behind({"k": "p", "id": item["id"], "n": parts_done})

    def finish(self, item_id: str) -> None:
        if self.items.pop(item_id, None) is not None:
            self.journal.append_behind({"k": "x", "id": item_id})

    def holds(self, item: dict[str, Any]) -> bool:
        """:class:`IOutbox`: one node's items are never handed over."""
        return True

    # -- compaction ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"items": list(self.items.values()), "targets": dict(self.targets),
                "dedupe": {app: ids.dump() for app, ids in self.dedupe.items()}}

    def compact(self) -> "defer.Deferred[None]":
        """The whole state into the checkpoint; the covered segments go."""
        through, lsn = self.journal.rotate()
        state = {STATE: [self.snapshot()]}

        d = self.run_io(self.journal.checkpoint, through, lsn, state)
        d.addCallback(lambda _: self.journal.compact(through, lsn))
        d.addErrback(lambda f: self.log.failure("platform ledger compaction failed", f))
        return d
