"""The dedupe set: kept 8 h by an explicit clock, bounded, serialisable."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from libchat.doors.platforms.dedupe import TTL, DedupeSet


def clock_at(t: float = 1_700_000_000.0) -> Clock:
    c = Clock()
    c.advance(t)
    return c


def test_the_same_id_three_times_is_new_once() -> None:
    d = DedupeSet(clock_at())
    assert [d.seen("msgid:1") for _ in range(3)] == [False, True, True]
    assert d.hits == 2


def test_ids_are_kept_at_least_eight_hours_then_expire() -> None:
    c = clock_at()
    d = DedupeSet(c)
    d.seen("a")
    c.advance(TTL - 1)
    assert "a" in d and d.seen("a")
    c.advance(1)
    assert "a" not in d and not d.seen("a")


def test_count_is_bounded_oldest_dropped_first() -> None:
    c = clock_at()
    d = DedupeSet(c, max_entries=3)
    for k in "abcd":
        d.seen(k)
        c.advance(1)
    assert len(d) == 3 and "a" not in d and "d" in d
    assert d.early_evictions == 1


def test_dump_and_load_survive_a_restart() -> None:
    c = clock_at()
    d = DedupeSet(c)
    d.seen("x")
    c.advance(100)
    d.seen("y")
    saved = json.loads(json.dumps(d.dump()))
    assert saved["version"] == 1 and [e[0] for e in saved["entries"]] == ["x", "y"]
    c.advance(TTL - 50)  # x is now older than the TTL, y is not
    again = DedupeSet.load(saved, c)
    assert "x" not in again and again.seen("y")


def test_load_ignores_garbage_and_keeps_the_newest_within_the_bound() -> None:
    c = clock_at()
    now = c.seconds()
    data = {"version": 1, "entries": [["a", now - 3], ["b", now - 2], ["c", now - 1], ["bad"], [1, now],
                                      ["d", "soon"], ["e", True]]}
    d = DedupeSet.load(data, c, max_entries=2)
    assert len(d) == 2 and "b" in d and "c" in d
    junks: list[Any] = [None, [], {"version": 99, "entries": [["a", now]]}, {"version": 1, "entries": 5}]
    for junk in junks:
        assert len(DedupeSet.load(junk, c)) == 0


def test_forget_lets_a_retry_through() -> None:
    d = DedupeSet(clock_at())
    d.seen("a")
    d.forget("a")
    assert not d.seen("a")


@settings(deadline=None)
@given(st.lists(st.tuples(st.text(max_size=3), st.floats(min_value=0, max_value=TTL / 4)), max_size=60))
def test_a_repeat_within_the_ttl_is_always_caught(events: list[tuple[str, float]]) -> None:
    c = clock_at()
    d = DedupeSet(c)
    first: dict[str, float] = {}
    for key, gap in events:
        c.advance(gap)
        now = c.seconds()
        repeat = d.seen(key)
        live = key in first and now - first[key] < TTL
        assert repeat == live
        if not live:
            first[key] = now
