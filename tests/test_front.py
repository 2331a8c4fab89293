"""The front protocol over StringTransport: every bad input, its answer, and
that the connection (or only it) survives as CONTRACT section 1 says."""

from __future__ import annotations

import json
import struct
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from libchat.protocol import codes
from libchat.doors.frame import FrontFactory
from libchat.protocol.wire import MAGIC, FrameDecoder, encode_event, encode_frame

from .helpers import World, each_case, tmp_dir, user_message
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


class FrontTests(LogCheckMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.world = World(tmp_dir(self))
        self.factory = FrontFactory(self.world.router, max_frame=1000)

    def test_valid_message_reaches_the_program(self) -> None:
        world = self.world
        factory = self.factory
        c = Conn(factory)
        assert c.send(encode_event(user_message("hello"))) == []
        assert world.last().sent[0]["messages"]["content"] == "hello"
        world.last().say({"event_type": 2001, "messages": {"content": "hey"}})
        (reply,) = c.read()
        assert reply["event_type"] == 2001 and reply["dialog_id"] == "d1"

    def test_bad_request_answers_2004_and_keeps_the_connection(self) -> None:
        def check(body: bytes) -> None:
            world = World(tmp_dir(self))  # a fresh router per case
            c = Conn(FrontFactory(world.router, max_frame=1000))
            (answer,) = c.send(encode_frame(1001, body))
            assert answer["event_type"] == 2004 and answer["code"] == codes.BAD_REQUEST
            assert c.open
            assert c.send(encode_event(user_message("hello"))) == []  # still works

        each_case(self, BAD_REQUEST_BODIES, check)

    def test_header_type_mismatch_is_bad_request_with_ids(self) -> None:
        factory = self.factory
        c = Conn(factory)
        (answer,) = c.send(encode_frame(1002, json.dumps(user_message(message_id="m7")).encode()))
        assert (answer["code"], answer["dialog_id"], answer["message_id"]) == (
            codes.BAD_REQUEST, "d1", "m7")
        assert c.open

    def test_unknown_event_keeps_the_connection(self) -> None:
        factory = self.factory
        c = Conn(factory)
        (answer,) = c.send(encode_event({**user_message(), "event_type": 2001}))
        assert answer["code"] == codes.UNKNOWN_EVENT and c.open

    def test_bad_magic_closes_only_that_connection(self) -> None:
        world = self.world
        factory = self.factory
        good, bad = Conn(factory), Conn(factory)
        good.send(encode_event(user_message("hello")))
        (answer,) = bad.send(struct.pack(">IHHII", 0x12345678, 1, 1001, 2, 0) + b"{}")
        assert answer["code"] == codes.BAD_FRAME and not bad.open
        assert good.open
        world.last().say({"event_type": 2001, "messages": {"content": "fine"}})
        assert good.read()[0]["messages"]["content"] == "fine"

    def test_oversized_frame_gets_msg_too_large_and_close(self) -> None:
        factory = self.factory
        c = Conn(factory)
        (answer,) = c.send(struct.pack(">IHHII", MAGIC, 1, 1001, 1001, 0))
        assert answer["code"] == codes.MSG_TOO_LARGE and not c.open

    def test_other_users_message_is_bad_request(self) -> None:
        factory = self.factory
        c = Conn(factory)
        c.send(encode_event(user_message("hello")))
        (answer,) = c.send(encode_event(user_message("x", user_id="eve")))
        assert answer["code"] == codes.BAD_REQUEST and c.open

    def test_internal_error_is_answered_and_logged(self) -> None:
        world = self.world
        factory = self.factory
        self.allow_log("internal error handling")
        self.patch(world.router, "receive", lambda *a: 1 / 0)
        c = Conn(factory)
        (answer,) = c.send(encode_event(user_message("hello")))
        assert answer["code"] == codes.INTERNAL_ERROR and c.open
        assert len(self.flushLoggedErrors(ZeroDivisionError)) == 1

    def test_frames_after_a_broken_header_in_the_same_read_are_not_processed(self) -> None:
        world = self.world
        factory = self.factory
        c = Conn(factory)
        answers = c.send(b"\0" * 16 + encode_event(user_message("hello")))
        assert [a["code"] for a in answers] == [codes.BAD_FRAME]
        assert world.runtime.started == []

    def test_custom_magic_applies_to_front(self) -> None:
        world = self.world
        c = Conn(FrontFactory(world.router, magic=0x01020304))
        assert c.send(encode_event(user_message("hello"), magic=0x01020304)) == []
        assert world.runtime.started
