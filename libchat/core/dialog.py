"""The live side of dialogs: who holds each one now, and the table of them.

A :class:`DialogRecord` is what the store keeps; a :class:`Dialog` adds what
only lives while the server runs (the upstream that spoke last, the foreground
instance, the idle timer). The table loads records from the store on demand.
"""

from __future__ import annotations

from typing import Any, Iterator

import attrs
from twisted.internet.interfaces import IDelayedCall

from libchat.interfaces import DialogInfo, IInstance, IStore, IUpstream
from libchat.storage.records import DialogRecord


@attrs.define(eq=False)
class Dialog:
    """A dialog record with its live state."""

    record: DialogRecord
    upstream: IUpstream | None = None
    foreground: IInstance | None = None
    idle: IDelayedCall | None = None  # armed by libchat.core.bindings
    last_user: dict[str, Any] | None = None  # the last 1001 given to the foreground

    def cancel_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        self.idle = None

    def info(self) -> DialogInfo:
        r = self.record
        return DialogInfo(dialog_id=r.dialog_id, user_id=r.user_id, channel=r.channel,
                          program=r.program, intent=r.intent, state=r.state, seq=r.seq)


class Dialogs:
    """Every dialog the router has touched, by id; the store holds the rest."""

    def __init__(self, store: IStore) -> None:
        self.store = store
        self._live: dict[str, Dialog] = {}

    def get(self, dialog_id: str) -> Dialog | None:
        """The dialog of an id, loading its record from the store if need be."""
        d = self._live.get(dialog_id)
        if d is None:
            record = self.store.get(dialog_id)
            if record is not None:
                d = self.wrap(record)
        return d

    def wrap(self, record: DialogRecord) -> Dialog:
        """The live dialog of a record the store already holds."""
        d = self._live.get(record.dialog_id)
        if d is None:
            d = self._live[record.dialog_id] = Dialog(record)
        return d

    def create(self, dialog_id: str, user_id: str, channel: str, now: float,
               intent: str | None = None) -> Dialog:
        """A new dialog, kept by the store from now on. Callers create one
        only once something is to be recorded in it (a refused first message
        leaves no record behind)."""
        record = DialogRecord(dialog_id=dialog_id, user_id=user_id, created_at=now,
                              updated_at=now, channel=channel, intent=intent)
        self.store.add(record)
        return self.wrap(record)

    def drop(self, dialog_id: str) -> Dialog | None:
        """Forget a live dialog (the store no longer holds it either)."""
        return self._live.pop(dialog_id, None)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(self._live.values())

    def with_foreground(self) -> int:
        return sum(1 for d in self._live.values() if d.foreground is not None)
