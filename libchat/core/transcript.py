"""Transcript entries (docs/durability.md) and the wire events derived from them.

Every event the router sends upstream is first one transcript entry; the
event is derived from that entry by :func:`event_from_entry`, so a replay
(WebSocket 1003, REST) gives exactly what was first delivered.
"""

from __future__ import annotations

from typing import Any, Callable

from libchat.protocol import codes
from libchat.protocol.events import new_message_id
from libchat.interfaces import IStore
from libchat.storage.records import DialogRecord

_NOT_IN_EVENTS = ("event_type", "at")


def event_from_entry(record: DialogRecord, entry: dict[str, Any]) -> dict[str, Any]:
    """The upstream event for a transcript entry; replays send exactly this."""
    event = {"event_type": entry["event_type"], "dialog_id": record.dialog_id,
             "user_id": record.user_id}
    for k, v in entry.items():
        if k not in _NOT_IN_EVENTS:
            event[k] = v
    return event


def after(messages: list[dict[str, Any]], seq: int) -> list[dict[str, Any]]:
    """The entries with ``seq`` greater than the given one, oldest first."""
    # seqs are 1, 2, 3... in order, so this is usually a slice; scan to be safe
    # with transcripts that were trimmed or loaded from older files
    if seq <= 0:
        return messages
    start = len(messages)
    while start > 0 and int(messages[start - 1].get("seq", 0)) > seq:
        start -= 1
    return messages[start:]


class Transcript:
    """Appends entries to dialog records and tells the store they changed."""

    def __init__(self, store: IStore, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now

    def user_message(self, record: DialogRecord, event: dict[str, Any]) -> int:
        """Record a user's 1001 (without its ids or intent); returns its seq."""
        now = self.now()
        entry = record.append({"event_type": codes.USER_MESSAGE,
                               "message_id": event["message_id"],
                               "messages": event["messages"], "at": now}, now)
        self.store.changed(record)
        return int(entry["seq"])

    def emit(self, record: DialogRecord, event_type: int, *, message_id: str | None = None,
             messages: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Record one libchat -> upstream entry; returns the event derived from it.
        ``extra`` fields that are None are left out."""
        now = self.now()
        entry: dict[str, Any] = {
            "event_type": event_type,
            "message_id": message_id or new_message_id(),
            "messages": messages if messages is not None else {"content": "",
                                                               "attachments": []},
            "at": now,
        }
        for k, v in extra.items():
            if v is not None:
                entry[k] = v
        entry = record.append(entry, now)
        self.store.changed(record)
        return event_from_entry(record, entry)


def replay(record: DialogRecord, seq: int, limit: int | None) -> list[dict[str, Any]]:
    """The events of entries after ``seq``; at most the last ``limit``."""
    entries = after(record.messages, seq)
    if limit is not None:
        entries = entries[-limit:] if limit > 0 else []
    return [event_from_entry(record, e) for e in entries]


def entries(record: DialogRecord, seq: int, limit: int | None) -> list[dict[str, Any]]:
    """Copies of the entries after ``seq``; at most the first ``limit``."""
    found = after(record.messages, seq)
    if limit is not None:
        found = found[:max(limit, 0)]
    return [dict(e) for e in found]
