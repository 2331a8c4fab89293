"""The IUpstream contract, run against the fake and every real front door:
a live upstream says so, takes events in order and hands each to its client
unchanged; once its client is gone it is no longer alive."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from libchat.doors.frame import FrontFactory
from libchat.doors.web.gateway import WebGateway
from libchat.interfaces import IUpstream
from libchat.jsonc import loads
from libchat.protocol.wire import FrameDecoder
from libchat.testing import FakeRouter, FakeUpstream

EVENTS = [
    {"event_type": 2001, "dialog_id": "d1", "user_id": "u1", "message_id": "m1",
     "messages": {"content": "héllo", "attachments": []}, "seq": 2, "program": "echo"},
    {"event_type": 2002, "dialog_id": "d1", "user_id": "u1", "reason": "completed", "seq": 3},
]


class UpstreamContract:
    """``make()`` returns (upstream, received, hang_up): what its client got so
    far, and a way to make its client go away."""

    channel: str

    def make(self) -> tuple[Any, Callable[[], list[dict[str, Any]]], Callable[[], None]]:
        raise NotImplementedError

    def test_provides_iupstream_with_its_channel(self) -> None:
        upstream, _, _ = self.make()
        assert verifyObject(IUpstream, upstream)
        assert upstream.channel == self.channel

    def test_alive_upstream_hands_events_to_its_client_in_order_unchanged(self) -> None:
        upstream, received, _ = self.make()
        assert upstream.alive()
        for event in EVENTS:
            upstream.deliver(event)
        assert received() == EVENTS


class TestFakeUpstream(UpstreamContract):
    channel = "frame"

    def make(self) -> Any:
        up = FakeUpstream()

        def hang_up() -> None:
            up.connected = False
        return up, lambda: up.events, hang_up

    def test_a_gone_client_makes_it_not_alive(self) -> None:
        up, _, hang_up = self.make()
        hang_up()
        assert not up.alive()


class TestFrameConnection(UpstreamContract):
    channel = "frame"

    def make(self) -> Any:
        router = FakeRouter()
        factory = FrontFactory(router, clock=Clock())
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        assert router.upstreams == [proto], "a connection attaches itself"
        decoder = FrameDecoder(factory.magic)

        def received() -> list[dict[str, Any]]:
            frames, error = decoder.feed(transport.value())
            transport.clear()
            assert error is None
            return [loads(body) for _, body in frames]

        def hang_up() -> None:
            proto.connectionLost(None)
        self.router = router
        return proto, received, hang_up

    def test_a_gone_client_makes_it_not_alive_and_detached(self) -> None:
        up, _, hang_up = self.make()
        hang_up()
        assert not up.alive()
        assert self.router.upstreams == []

    def test_a_paused_client_is_not_alive_until_it_reads_again(self) -> None:
        up, _, _ = self.make()
        self.router.drained.clear()  # attaching drained once already
        up.pauseProducing()
        assert not up.alive()
        up.resumeProducing()
        assert up.alive()
        assert self.router.drained == [up], "resuming asks the router for what waited"


class TestWebGateway(UpstreamContract):
    channel = "web"

    def make(self) -> Any:
        gateway = WebGateway(FakeRouter(), Clock())
        got: list[dict[str, Any]] = []

        class Pusher:
            def push(self, user_id: str, event: dict[str, Any]) -> None:
                assert user_id == event["user_id"]
                got.append(event)
        gateway.pushers.append(Pusher())
        return gateway, lambda: got, lambda: None

    def test_always_alive_the_transcript_is_its_buffer(self) -> None:
        up, _, hang_up = self.make()
        hang_up()
        assert up.alive()
