"""Dialog files that cost what changed, not the whole transcript.

The file store writes every changed dialog each ``--flush-interval``: the
reactor only copies the records' containers (:func:`snapshot_of`), and the
flush thread serialises the copies and writes them. Re-encoding a long
transcript each time is quadratic over a dialog's life: the benchmark saw
100 busy dialogs' flushes take seconds and routing collapse to a few hundred
messages per second. Transcript entries never change once appended
(:meth:`DialogRecord.append`), so each is encoded once and appended to the
dialog's kept bytes (one growing buffer, already joined); a flush encodes only
the new entries and hands the file to the kernel as a few buffers
(``writev``), never joining a long transcript into one new bytes object (that
copy held the GIL the reactor needs, and its multi-megabyte allocations made
the flush thread's malloc arena grow and shrink: thousands of ``mprotect``
calls per second under the benchmark's load). The file stays a JSON object
with indented fields and one transcript entry per line.

The bytes kept are bounded: a closed dialog's are dropped once its file is
written (it rarely grows again; if it does, it is encoded afresh once), and
beyond ``max_entries`` encoded entries in all, the dialogs written longest ago
are dropped first.
"""

from __future__ import annotations

from typing import Any

from libchat.jsonc import dumps, dumps_pretty
from libchat.storage.records import CLOSED, RECORD_FIELDS, DialogRecord

# below this many entries re-encoding is cheap: keep no bytes for the record
MIN_CACHED = 32
# encoded transcript entries kept in all (a few hundred bytes each)
MAX_ENTRIES = 500_000


def snapshot_of(record: DialogRecord) -> dict[str, Any]:
    """A copy the flush thread may serialise while the reactor keeps changing
    the record: the containers are copied; entries and values are never
    mutated after they are added, so they are shared."""
    data = {name: getattr(record, name) for name in RECORD_FIELDS}  # attrs.asdict is 3x slower
    data["messages"] = list(record.messages)
    data["memory"] = {p: dict(keys) for p, keys in record.memory.items()}
    return data


SEP = b",\n    "


class _Encoded:
    __slots__ = ("body", "count", "last_seq", "source")

    def __init__(self, source: list[Any]) -> None:
        self.source = source  # the very list object the entries came from
        self.last_seq: Any = None
        self.count = 0  # entries encoded into body
        self.body = bytearray()  # the entries' JSON joined by SEP


class RecordEncoder:
    """``encode(record)`` -> the bytes of ``DATA/<dialog_id>.json``.

    Used by one thread at a time (the file store's flush thread, one flush at
    a time): it is not locked."""

    def __init__(self, min_cached: int = MIN_CACHED, max_entries: int = MAX_ENTRIES) -> None:
        self.min_cached = min_cached
        self.max_entries = max_entries
        # dialog id -> its encoded entries, the least recently written first
        self._cache: dict[str, _Encoded] = {}
        self._entries_kept = 0

    def _entries(self, dialog_id: str, messages: list[dict[str, Any]],
                 source: list[Any] | None = None) -> bytearray:
        source = messages if source is None else source
        enc = self.forget(dialog_id)
        n = enc.count if enc else 0
        if (enc is None or enc.source is not source or n > len(messages)
                or (n and messages[n - 1].get("seq") != enc.last_seq)):
            enc, n = _Encoded(source), 0  # another list, or rewritten: start over
        if n < len(messages):
            body = enc.body
            if body:
                body += SEP
            body += SEP.join([dumps(entry) for entry in messages[n:]])
            enc.count = len(messages)
        if messages:
            enc.last_seq = messages[-1].get("seq")
        if len(messages) >= self.min_cached:
            self._cache[dialog_id] = enc  # now the most recently written
            self._entries_kept += enc.count
            while self._entries_kept > self.max_entries and len(self._cache) > 1:
                self.forget(next(iter(self._cache)))
        return enc.body

    def encode(self, record: DialogRecord) -> bytes:
        return self.encode_data(record.to_json(), record.messages)

    def encode_data(self, data: dict[str, Any], source: list[Any]) -> bytes:
        """The file as one bytes object (tests; :meth:`encode_parts` writes)."""
        return b"".join(self.encode_parts(data, source))

    def encode_parts(self, data: dict[str, Any], source: list[Any]) -> list[bytes | bytearray]:
        """Encode a copy of a record (:func:`snapshot_of`) whose ``messages``
        holds the first entries of the record's live list ``source`` (the
        cache is keyed on that list), as buffers to write in order. The
        transcript's buffer is the one kept: write it before the next call."""
        data = dict(data)
        messages = data.pop("messages")
        head = dumps_pretty(data)
        assert head.endswith(b"\n}"), head[-8:]
        body = self._entries(data["dialog_id"], messages, source)
        if data.get("state") == CLOSED:
            self.forget(data["dialog_id"])  # written whole; it rarely grows again
        if not body:
            return [head[:-2], b',\n  "messages": []\n}\n']
        return [head[:-2], b',\n  "messages": [\n    ', body, b"\n  ]\n}\n"]

    def forget(self, dialog_id: str) -> _Encoded | None:
        """Drop the bytes kept for a dialog; returns them (or None)."""
        enc = self._cache.pop(dialog_id, None)
        if enc is not None:
            self._entries_kept -= enc.count
        return enc

    def cached(self) -> int:
        """Records whose entries are kept encoded (tests, metrics)."""
        return len(self._cache)

    def entries_kept(self) -> int:
        """Encoded transcript entries kept in all (tests, metrics)."""
        return self._entries_kept
