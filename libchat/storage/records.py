"""The persistent shape of a dialog (docs/durability.md), shared by every store."""

from __future__ import annotations

from typing import Any

import attrs

# states of a dialog record
OPEN = "open"  # no foreground program; the next 1001 resolves an intent
FOREGROUND = "foreground"  # a program instance holds the microphone
CLOSED = "closed"  # the client sent 1002 (a later 1001 reopens it)


@attrs.define(eq=False)
class DialogRecord:
    """Everything libchat keeps about one dialog; JSON-serialisable as is."""

    dialog_id: str
    user_id: str
    created_at: float
    updated_at: float
    program: str | None = None
    state: str = OPEN
    channel: str = "frame"
    # a REST session's pinned intent: used whenever the foreground is free and
    # the 1001 names none (libchat.doors.web.rest)
    intent: str | None = None
    messages: list[dict[str, Any]] = attrs.Factory(list)
    # {program: {key: {"value": <json>, "at": <unix time>}}}: saved in this dialog
    memory: dict[str, dict[str, dict[str, Any]]] = attrs.Factory(dict)
    seq: int = 0
    # {program: conversation id}: a hosted agent's conversation kept for this
    # dialog (docs/agents.md); replaced, never mutated, so deltas see it change
    conversations: dict[str, str] = attrs.Factory(dict)

    def append(self, entry: dict[str, Any], now: float) -> dict[str, Any]:
        """Add a transcript entry with the next ``seq`` (1, 2, ...)."""
        self.seq += 1
        entry = {"seq": self.seq, **entry}
        self.messages.append(entry)
        self.updated_at = now
        return entry

    def remember(self, program: str, key: str, value: Any, now: float) -> None:
        self.memory.setdefault(program, {})[key] = {"value": value, "at": now}
        self.updated_at = now

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DialogRecord":
        names = {a.name for a in attrs.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in names})
        if not isinstance(record.messages, list) or not isinstance(record.memory, dict):
            raise ValueError("messages must be a list and memory an object")
        if record.messages:
            record.seq = max(record.seq, int(record.messages[-1].get("seq", 0)))
        return record


# every field, in declaration order (what a snapshot copies)
RECORD_FIELDS = tuple(a.name for a in attrs.fields(DialogRecord))
