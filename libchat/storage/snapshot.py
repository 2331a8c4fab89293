"""Dialog files that cost what changed, not the whole transcript.

The file store writes every changed dialog each ``--flush-interval``, and it
serialises on the reactor thread (a consistent snapshot). Re-encoding a long
transcript each time is quadratic over a dialog's life: the benchmark saw
100 busy dialogs' flushes take seconds and routing collapse to a few hundred
messages per second. Transcript entries never change once appended
(:meth:`DialogRecord.append`), so each is encoded once and kept as bytes; a
flush encodes only the new entries and joins bytes. The file stays a JSON
object with indented fields and one transcript entry per line.
"""

from __future__ import annotations

from typing import Any

from libchat.jsonc import dumps, dumps_pretty
from libchat.storage.records import DialogRecord

# below this many entries re-encoding is cheap: keep no bytes for the record
MIN_CACHED = 32


class _Encoded:
    __slots__ = ("chunks", "last_seq", "source")

    def __init__(self, source: list[Any]) -> None:
        self.source = source  # the very list object the chunks came from
        self.last_seq: Any = None
        self.chunks: list[bytes] = []


class RecordEncoder:
    """``encode(record)`` -> the bytes of ``DATA/<dialog_id>.json``."""

    def __init__(self, min_cached: int = MIN_CACHED) -> None:
        self.min_cached = min_cached
        self._cache: dict[str, _Encoded] = {}

    def _entries(self, dialog_id: str, messages: list[dict[str, Any]],
                 source: list[Any] | None = None) -> list[bytes]:
        source = messages if source is None else source
        enc = self._cache.get(dialog_id)
        n = len(enc.chunks) if enc else 0
        if (enc is None or enc.source is not source or n > len(messages)
                or (n and messages[n - 1].get("seq") != enc.last_seq)):
            enc, n = _Encoded(source), 0  # another list, or rewritten: start over
        enc.chunks.extend(dumps(entry) for entry in messages[n:])
        if messages:
            enc.last_seq = messages[-1].get("seq")
        if len(messages) >= self.min_cached:
            self._cache[dialog_id] = enc
        else:
            self._cache.pop(dialog_id, None)
        return enc.chunks

    def encode(self, record: DialogRecord) -> bytes:
        return self.encode_data(record.to_json(), record.messages)

    def encode_data(self, data: dict[str, Any], source: list[Any]) -> bytes:
        """Encode a copy of a record (``libchat.storage.store.snapshot_of``) whose
        ``messages`` holds the first entries of the record's live list
        ``source`` (the cache is keyed on that list). The file store calls it
        from its flush thread, one flush at a time."""
        data = dict(data)
        messages = data.pop("messages")
        head = dumps_pretty(data)
        assert head.endswith(b"\n}"), head[-8:]
        chunks = self._entries(data["dialog_id"], messages, source)
        if not chunks:
            return head[:-2] + b',\n  "messages": []\n}\n'
        return b"".join((head[:-2], b',\n  "messages": [\n    ', b",\n    ".join(chunks),
                         b"\n  ]\n}\n"))

    def forget(self, dialog_id: str) -> None:
        self._cache.pop(dialog_id, None)

    def cached(self) -> int:
        """Records whose entries are kept encoded (tests, metrics)."""
        return len(self._cache)
