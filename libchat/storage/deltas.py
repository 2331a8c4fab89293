"""What the file store hands its journal, and how a replay applies it back.

One journal line holds one entry, a JSON object whose ``t`` is its kind:

- ``mem`` ``{u, p, k, v, d, at}``: a memory save (written ahead: the 200 waits);
- ``rec`` ``{d, h, m}``: a dialog's header ``h`` (every field of the record but
  its transcript and memory) and the transcript entries ``m`` added since the
  dialog's previous ``rec`` (written behind);
- ``pq`` ``{c, e}`` / ``pt`` ``{c, n}``: a reply queued for channel ``c`` / the
  ``n`` oldest of it delivered (written behind).

The store builds entries when something changes and pushes them; the journal
(:mod:`libchat.storage.journal`) only writes and reads lines.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from libchat.storage.records import RECORD_FIELDS, DialogRecord

# a new field of DialogRecord is journaled without a change here (a REST
# session's pinned intent was once left out, and lost on kill -9)
HEADER_FIELDS = tuple(f for f in RECORD_FIELDS if f not in ("dialog_id", "messages", "memory"))
# updated_at moves with every memory save, which has its own entry
_COMPARED = tuple(f for f in HEADER_FIELDS if f != "updated_at")
_SEQ = _COMPARED.index("seq")
# one C call per field list: this runs twice per routed round trip (a
# generator of getattr calls cost ~10% of the router's Python time)
_compared = attrgetter(*_COMPARED)
_header = attrgetter(*HEADER_FIELDS)


def mem_entry(user_id: str, program: str, key: str, value: Any, dialog_id: str,
              at: float) -> dict[str, Any]:
    return {"t": "mem", "u": user_id, "p": program, "k": key, "v": value, "d": dialog_id,
            "at": at}


def queued_entry(channel: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"t": "pq", "c": channel, "e": event}


def taken_entry(channel: str, count: int) -> dict[str, Any]:
    return {"t": "pt", "c": channel, "n": count}


class RecordDeltas:
    """Remembers, per dialog, the header last handed to the journal, so a
    change becomes the ``rec`` entry of only what is new."""

    def __init__(self) -> None:
        self._sent: dict[str, tuple[Any, ...]] = {}

    def known(self, record: DialogRecord) -> None:
        """The record is already durable as it is (read from a file or replayed)."""
        self._sent[record.dialog_id] = _compared(record)

    def delta(self, record: DialogRecord) -> dict[str, Any] | None:
        """The ``rec`` entry for what changed since the last one, or None."""
        now = _compared(record)
        before = self._sent.get(record.dialog_id)
        if now == before:
            return None
        self._sent[record.dialog_id] = now
        new = record.seq - (before[_SEQ] if before else 0)
        return {"t": "rec", "d": record.dialog_id,
                "h": dict(zip(HEADER_FIELDS, _header(record))),
                "m": record.messages[-new:] if new > 0 else []}


def apply_record(records: dict[str, DialogRecord], entry: dict[str, Any]) -> DialogRecord:
    """Replay one ``rec`` entry into ``records``; returns the record. An older
    entry never rolls a record back: its header applies only when its ``seq``
    is not behind, and only transcript entries past the record's ``seq`` are
    added (replay after a crash between a snapshot and the journal's
    compaction meets entries the snapshot already holds)."""
    dialog_id, header = entry["d"], entry["h"]
    record = records.get(dialog_id)
    if record is None:
        record = records[dialog_id] = DialogRecord(
            dialog_id=dialog_id, user_id=header["user_id"],
            created_at=header["created_at"], updated_at=header["updated_at"])
    if header["seq"] >= record.seq:
        for f in HEADER_FIELDS:
            if f != "seq" and f in header:  # entries of older versions lack some
                setattr(record, f, header[f])
    for m in entry["m"]:
        if int(m["seq"]) > record.seq:
            record.messages.append(m)
            record.seq = int(m["seq"])
    return record
