"""The set of callback ids already seen, so platform retries route once.

WeCom retries a callback 3 times within seconds; Lark retries for about 7
hours. Section 10 keeps ids for at least :data:`TTL` (8 h) and across
restarts, bounded in memory. Time comes from an injected clock (a
``task.Clock`` in tests, the reactor in service) and must be wall time, since
the set outlives the process.

Bounded count: past ``max_entries`` the oldest id is dropped even if it is
younger than the TTL (``early_evictions`` counts those; the default of 200,000
holds 8 h at about 7 new messages a second per app).

Persistence format (:meth:`DedupeSet.dump` / :meth:`DedupeSet.load`), a JSON
object written atomically by the caller::

    {"version": 1, "ttl": 28800.0, "entries": [["<key>", <seen at, epoch s>], ...]}

entries oldest first. Loading drops expired and malformed entries and keeps
at most ``max_entries`` of the newest.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

TTL = 8 * 3600.0
MAX_ENTRIES = 200_000
VERSION = 1


class Clock(Protocol):
    def seconds(self) -> float: ...


class DedupeSet:
    def __init__(self, clock: Clock, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("ttl and max_entries must be positive")
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.hits = 0
        self.early_evictions = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        self.expire()
        return key in self._seen

    def seen(self, key: str) -> bool:
        """True for a repeat (counted in ``hits``); else remember ``key``, False."""
        self.expire()
        if key in self._seen:
            self.hits += 1
            return True
        self._seen[key] = self.clock.seconds()
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self.early_evictions += 1
        return False

    def forget(self, key: str) -> None:
        """Drop ``key`` (a callback that was refused after all may be retried)."""
        self._seen.pop(key, None)

    def expire(self) -> None:
        """Drop ids older than the TTL (oldest first, so this stops early)."""
        cutoff = self.clock.seconds() - self.ttl
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if at > cutoff:
                break
            self._seen.popitem(last=False)

    def dump(self) -> dict[str, Any]:
        self.expire()
        return {"version": VERSION, "ttl": self.ttl,
                "entries": [[k, at] for k, at in self._seen.items()]}

    @classmethod
    def load(cls, data: Any, clock: Clock, ttl: float = TTL,
             max_entries: int = MAX_ENTRIES) -> "DedupeSet":
        """A set from :meth:`dump`'s output; anything unreadable gives an empty set."""
        out = cls(clock, ttl, max_entries)
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == VERSION else None
        pairs = [e for e in entries if isinstance(e, list) and len(e) == 2] if isinstance(entries, list) else []
        good = [(k, float(at)) for k, at in pairs
                if isinstance(k, str) and isinstance(at, (int, float)) and not isinstance(at, bool)]
        good.sort(key=lambda e: e[1])
        for key, at in good[-max_entries:]:
            out._seen[key] = at
            out._seen.move_to_end(key)
        out.expire()
        return out
