"""The token cache: kept for its lifetime less a margin, dropped when refused."""

from __future__ import annotations

from twisted.internet.task import Clock

from libchat.doors.platforms.tokens import TokenCache


def test_token_is_kept_until_the_margin_before_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    assert cache.current() is None
    cache.begin_fetch()
    assert cache.fetching()
    cache.store("t1", 7200)
    assert not cache.fetching() and cache.current() == "t1"
    clock.advance(7200 - 300 - 1)
    assert cache.current() == "t1"
    clock.advance(1)
    assert cache.current() is None


def test_short_lifetimes_keep_at_least_half() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.store("t", 400)
    clock.advance(199)
    assert cache.current() == "t"
    clock.advance(1)
    assert cache.current() is None


def test_invalidate_drops_only_the_token_that_was_refused() -> None:
    cache = TokenCache(Clock())
    cache.store("old", 7200)
    cache.invalidate("old")
    assert cache.current() is None
    cache.store("new", 7200)
    cache.invalidate("old")  # a late refusal of the old token
    assert cache.current() == "new"


def test_failed_fetch_clears_the_flag_and_counts() -> None:
    cache = TokenCache(Clock())
    cache.begin_fetch()
    cache.fetch_failed()
    assert not cache.fetching() and cache.fetches == 1 and cache.current() is None
