"""The front protocol over StringTransport, on a FakeRouter: every bad input,
its answer, and that the connection (or only it) survives as docs/protocol.md
§1 says."""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from libchat.doors.frame import FrontFactory
from libchat.interfaces import IUpstream
from libchat.protocol import codes
from libchat.protocol.wire import MAGIC, FrameDecoder, encode_event, encode_frame
from libchat.testing import FakeRouter

from .helpers import each_case, user_message
from .logcheck import LogCheckMixin


class Conn:
    def __init__(self, factory: FrontFactory) -> None:
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.decoder = FrameDecoder(factory.magic)

    def send(self, data: bytes) -> list[dict[str, Any]]:
        self.proto.dataReceived(data)
        return self.read()

    def read(self) -> list[dict[str, Any]]:
        frames, error = self.decoder.feed(self.transport.value())
        self.transport.clear()
        assert error is None
        for etype, body in frames:
            assert json.loads(body)["event_type"] == etype
        return [json.loads(b) for _, b in frames]

    @property
    def open(self) -> bool:
        return not self.transport.disconnecting


BAD_REQUEST_BODIES = [b"nope", b"[]", json.dumps({"event_type": 1001}).encode(),
                      json.dumps(user_message(dialog_id="../../etc")).encode()]


def factory(router: FakeRouter, **kw: Any) -> FrontFactory:
    kw.setdefault("max_frame", 1000)
    return FrontFactory(router, clock=Clock(), **kw)


class FrontTests(LogCheckMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.router = FakeRouter()
        self.factory = factory(self.router)

    def received(self) -> list[dict[str, Any]]:
        return [event for _, event in self.router.received]

    def test_a_connection_is_an_attached_upstream_of_channel_frame(self) -> None:
        c = Conn(self.factory)
        assert verifyObject(IUpstream, c.proto) and c.proto.channel == "frame"
        assert self.router.upstreams == [c.proto] and c.proto.alive()
        c.proto.connectionLost(None)
        assert self.router.upstreams == []

    def test_valid_message_reaches_the_router_and_replies_come_back(self) -> None:
        c = Conn(self.factory)
        assert c.send(encode_event(user_message("hello"))) == []
        assert self.router.received == [(c.proto, user_message("hello"))]
        self.router.reply("d1", "hey")
        (reply,) = c.read()
        assert (reply["event_type"], reply["dialog_id"], reply["seq"]) == (2001, "d1", 2)

    def test_a_refused_event_is_answered_on_the_same_connection(self) -> None:
        c = Conn(self.factory)
        busy = codes.error(codes.BUSY, "full", dialog_id="d1", message_id="m-hello")
        self.router.refusals.append(busy)
        assert c.send(encode_event(user_message("hello"))) == [busy]
        assert c.open

    def test_bad_request_answers_2004_and_keeps_the_connection(self) -> None:
        def check(body: bytes) -> None:
            router = FakeRouter()  # a fresh router per case
            c = Conn(factory(router))
            (answer,) = c.send(encode_frame(1001, body))
            assert answer["event_type"] == 2004 and answer["code"] == codes.BAD_REQUEST
            assert c.open and router.received == []
            assert c.send(encode_event(user_message("hello"))) == []  # still works
            assert len(router.received) == 1

        each_case(self, BAD_REQUEST_BODIES, check)

    def test_header_type_mismatch_is_bad_request_with_ids(self) -> None:
        c = Conn(self.factory)
        (answer,) = c.send(encode_frame(1002, json.dumps(user_message(message_id="m7")).encode()))
        assert (answer["code"], answer["dialog_id"], answer["message_id"]) == (
            codes.BAD_REQUEST, "d1", "m7")
        assert c.open

    def test_unknown_event_keeps_the_connection(self) -> None:
        c = Conn(self.factory)
        (answer,) = c.send(encode_event({**user_message(), "event_type": 2001}))
        assert answer["code"] == codes.UNKNOWN_EVENT and c.open

    def test_bad_magic_closes_only_that_connection(self) -> None:
        good, bad = Conn(self.factory), Conn(self.factory)
        good.send(encode_event(user_message("hello")))
        (answer,) = bad.send(struct.pack(">IHHII", 0x12345678, 1, 1001, 2, 0) + b"{}")
        assert answer["code"] == codes.BAD_FRAME and not bad.open
        assert good.open
        self.router.reply("d1", "fine")
        assert good.read()[0]["messages"]["content"] == "fine"

    def test_oversized_frame_gets_msg_too_large_and_close(self) -> None:
        c = Conn(self.factory)
        (answer,) = c.send(struct.pack(">IHHII", MAGIC, 1, 1001, 1001, 0))
        assert answer["code"] == codes.MSG_TOO_LARGE and not c.open

    def test_the_routers_2004_for_another_users_message_is_sent_back(self) -> None:
        c = Conn(self.factory)
        c.send(encode_event(user_message("hello")))
        (answer,) = c.send(encode_event(user_message("x", user_id="eve")))
        assert answer["code"] == codes.BAD_REQUEST and c.open

    def test_internal_error_is_answered_and_logged(self) -> None:
        self.allow_log("internal error handling")
        self.patch(self.router, "receive", lambda *a: 1 / 0)
        c = Conn(self.factory)
        (answer,) = c.send(encode_event(user_message("hello")))
        assert answer["code"] == codes.INTERNAL_ERROR and c.open
        assert len(self.flushLoggedErrors(ZeroDivisionError)) == 1

    def test_frames_after_a_broken_header_in_the_same_read_are_not_processed(self) -> None:
        c = Conn(self.factory)
        answers = c.send(b"\0" * 16 + encode_event(user_message("hello")))
        assert [a["code"] for a in answers] == [codes.BAD_FRAME]
        assert self.router.received == []

    def test_custom_magic_applies_to_front(self) -> None:
        c = Conn(factory(self.router, magic=0x01020304))
        assert c.send(encode_event(user_message("hello"), magic=0x01020304)) == []
        assert self.received() == [user_message("hello")]

    def test_resuming_after_backpressure_asks_the_router_to_drain(self) -> None:
        c = Conn(self.factory)
        c.proto.pauseProducing()
        assert not c.proto.alive()
        self.router.drained.clear()
        c.proto.resumeProducing()
        assert c.proto.alive() and self.router.drained == [c.proto]
