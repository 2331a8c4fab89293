"""The in-memory store: dialog records and the tool-memory index.

It is the base of :class:`libchat.storage.store.JsonFileStore` and, on its own,
the verified fake of :class:`libchat.interfaces.IStore` (``libchat.testing``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from libchat.interfaces import IStore
from libchat.storage.records import DialogRecord


@implementer(IStore)
class MemoryStore:
    """Keeps everything in memory; nothing survives the process."""

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

    def memory_get(self, user_id: str, program: str, key: str) -> Any:
        hit = self._memory.get((user_id, program, key))
        return None if hit is None else hit[1]

    def memory_set(
        self, user_id: str, program: str, key: str, value: Any, dialog_id: str, now: float = 0.0
    ) -> "defer.Deferred[None]":
        self._memory[(user_id, program, key)] = (now, value)  # a live save always wins
        record = self._records.get(dialog_id)
        if record is not None:
            record.remember(program, key, value, now)
            self.changed(record)
        return defer.succeed(None)

    def conversation_get(self, dialog_id: str, program: str) -> str | None:
        record = self._records.get(dialog_id)
        return None if record is None else record.conversations.get(program)

    def conversation_set(self, dialog_id: str, program: str, conversation_id: str | None) -> None:
        record = self._records.get(dialog_id)
        if record is None or record.conversations.get(program) == conversation_id:
            return
        kept = {k: v for k, v in record.conversations.items() if k != program}
        if conversation_id:
            kept[program] = conversation_id
        record.conversations = kept  # a new dict: the journal's delta sees the change
        self.changed(record)

    def _remember(self, user_id: str, program: str, key: str, value: Any, at: float) -> None:
        """Index a save unless a newer one of the same slot is known (replay
        and loading meet saves out of order)."""
        slot = (user_id, program, key)
        if slot not in self._memory or self._memory[slot][0] <= at:
            self._memory[slot] = (at, value)

    def _index(self, record: DialogRecord) -> None:
        for program, keys in record.memory.items():
            for key, item in keys.items():
                self._remember(record.user_id, program, key, item.get("value"),
                               float(item.get("at", 0)))

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
