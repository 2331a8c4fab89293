"""The WebSocket door's pieces: the rate limiter and the connection registry."""

from __future__ import annotations

from twisted.internet.task import Clock

from libchat.doors.web.ws import ConnectionRegistry, RateLimiter


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock.seconds)
    assert [limiter.allow() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.2)
    assert limiter.allow() and not limiter.allow()
    clock.advance(100)  # never more than the burst
    assert sum(limiter.allow() for _ in range(10)) == 5


def test_rate_below_one_per_second_still_allows_one() -> None:
    clock = Clock()
    limiter = RateLimiter(0.5, clock.seconds)
    assert limiter.allow() and not limiter.allow()
    clock.advance(2)
    assert limiter.allow()


class FakeSocket:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.sent: list[bytes] = []

    def send_payload(self, payload: bytes) -> None:
        self.sent.append(payload)


def test_registry_pushes_to_every_connection_of_a_user_and_caps_them() -> None:
    registry = ConnectionRegistry(max_per_user=2)
    a1, a2, b = FakeSocket("alice"), FakeSocket("alice"), FakeSocket("bob")
    for conn in (a1, a2, b):
        assert not registry.full(conn.user_id)
        registry.add(conn)  # type: ignore[arg-type]
    assert registry.full("alice") and not registry.full("bob")
    assert (registry.count(), registry.users()) == (3, 2)
    registry.push("alice", {"event_type": 2001})
    assert a1.sent == a2.sent == [b'{"event_type":2001}'] and b.sent == []
    registry.remove(a1)  # type: ignore[arg-type]
    registry.remove(a1)  # type: ignore[arg-type]  (twice is harmless)
    assert not registry.full("alice") and registry.count() == 2
    registry.remove(b)  # type: ignore[arg-type]
    assert registry.users() == 1
    registry.push("nobody", {"event_type": 2001})
