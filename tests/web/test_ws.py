"""The WebSocket door's pieces: the rate limiter, the connection registry, and
its message handling on a FakeRouter."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from libchat.doors.web.auth import Authenticator
from libchat.doors.web.gateway import WebGateway
from libchat.doors.web.ws import ChatSocketFactory, ConnectionRegistry, RateLimiter
from libchat.jsonc import dumps
from libchat.protocol import codes
from libchat.protocol.events import BadEvent
from libchat.testing import FakeRouter


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


def socket_on(router: Any) -> Any:
    """A ChatSocket of alice on a gateway over ``router``, without a transport
    (the handshake and framing are autobahn's, tested end to end)."""
    clock = Clock()
    gateway = WebGateway(router, clock)
    router.attach(gateway)
    factory = ChatSocketFactory(gateway, Authenticator(None), ConnectionRegistry(), clock,
                                max_frame=1000)
    sock = factory.buildProtocol(None)
    sock.user_id = "alice"
    sock._limiter = RateLimiter(factory.rate, clock.seconds)
    return sock


def test_a_message_is_routed_as_the_sockets_user_whatever_the_frame_says() -> None:
    router = FakeRouter()
    sock = socket_on(router)
    frame = {"event_type": 1001, "dialog_id": "d1", "user_id": "mallory", "message_id": "m1",
             "messages": {"content": "hi", "attachments": []}}
    assert sock._handle(dumps(frame), False) == []
    [(_, event)] = router.received
    assert event["user_id"] == "alice" and event["messages"]["content"] == "hi"
    busy = codes.error(codes.BUSY, "full", dialog_id="d1")
    router.refusals.append(busy)
    assert sock._handle(dumps({**frame, "message_id": "m2"}), False) == [busy]


def test_a_1003_replays_the_users_own_dialog_after_a_seq() -> None:
    router = FakeRouter()
    sock = socket_on(router)
    frame = {"event_type": 1001, "dialog_id": "d1", "message_id": "m1",
             "messages": {"content": "hi", "attachments": []}}
    sock._handle(dumps(frame), False)
    reply = router.reply("d1", "there")
    assert sock._handle(dumps({"event_type": 1003, "dialog_id": "d1", "after": 1}),
                        False) == [reply]
    with pytest.raises(BadEvent):
        sock._handle(dumps({"event_type": 1003, "dialog_id": "not-mine"}), False)
