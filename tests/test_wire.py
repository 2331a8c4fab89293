"""The framer, byte by byte (docs/protocol.md §1)."""

from __future__ import annotations

import json
import struct

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from libchat.protocol import codes
from libchat.protocol.wire import (HEADER_SIZE, MAGIC, FrameDecoder, FrameError, FrameProtocol,
                          encode_event, encode_frame)

from .helpers import each_case
from .logcheck import LogCheckMixin

# the seed's examples (seed 000), verbatim content
SEED_1001 = {
    "event_type": 1001, "dialog_id": "10568594826961410", "message_id": "msg-4o49wg0txg",
    "user_id": "user-123456789",
    "messages": {"content": "提交代码没有编译出版本，帮我查看一下自动构建的状态",
                 "attachments": [{"type": "file", "name": "readme.md",
                                  "file_id": "file_xxxxxxxxxxxx", "option": {}}]},
}
SEED_1002 = {"event_type": 1002, "user_id": "user-123456789", "dialog_id": "10568594826961410"}
SEED_2001 = {**SEED_1001, "event_type": 2001, "messages": {"content": "你好", "attachments": []}}
SEED_2002 = {"event_type": 2002, "user_id": "user-123456789", "dialog_id": "10568594826961410"}
SEED_2003 = {**SEED_1001, "event_type": 2003}
SEEDS = [SEED_1001, SEED_1002, SEED_2001, SEED_2002, SEED_2003]


def decode_all(data: bytes, chunks: list[int] | None = None) -> list[tuple[int, bytes]]:
    decoder = FrameDecoder()
    out: list[tuple[int, bytes]] = []
    pos = 0
    for size in chunks or [len(data)]:
        frames, error = decoder.feed(data[pos:pos + size])
        assert error is None
        out.extend(frames)
        pos += size
    frames, error = decoder.feed(data[pos:])
    assert error is None
    return out + frames


class Recorder(FrameProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    def frameReceived(self, event_type: int, body: bytes) -> None:
        self.got.append((event_type, body))


def connected(proto: FrameProtocol) -> StringTransport:
    transport = StringTransport()
    proto.makeConnection(transport)
    return transport


class WireTests(LogCheckMixin, SynchronousTestCase):
    def test_header_layout_of_seed_examples(self) -> None:
        """The header is magic, version 1, event_type, UTF-8 byte length, zero reserved."""
        def check(event: dict) -> None:
            frame = encode_event(event)
            magic, version, etype, length, reserved = struct.unpack(">IHHII", frame[:16])
            body = frame[16:]
            assert (magic, version, etype, reserved) == (MAGIC, 1, event["event_type"], 0)
            assert length == len(body) == len(json.dumps(event, ensure_ascii=False,
                                                           separators=(",", ":")).encode("utf-8"))
            assert json.loads(body) == event

        each_case(self, SEEDS, check, name=lambda e: str(e["event_type"]))

    def test_seed_examples_byte_by_byte(self) -> None:
        """Every seed frame survives arriving one byte per read."""
        stream = b"".join(encode_event(e) for e in SEEDS)
        frames = decode_all(stream, [1] * len(stream))
        assert [json.loads(b) for _, b in frames] == SEEDS
        assert [t for t, _ in frames] == [e["event_type"] for e in SEEDS]

    def test_many_frames_in_one_read(self) -> None:
        stream = b"".join(encode_event(e) for e in SEEDS * 50)
        assert len(decode_all(stream)) == 250

    @settings(max_examples=200, deadline=None)
    @given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
           cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
    def test_split_anywhere_property(self, bodies: list[bytes], cuts: list[int]) -> None:
        """However a stream of frames is cut into reads, the same frames come out."""
        stream = b"".join(encode_frame(1001 + i % 3, b) for i, b in enumerate(bodies))
        points = sorted({c % (len(stream) + 1) for c in cuts})
        sizes = [b - a for a, b in zip([0] + points, points + [len(stream)])]
        frames = decode_all(stream, sizes)
        assert [b for _, b in frames] == bodies

    def test_bad_magic_is_bad_frame_and_earlier_frames_survive(self) -> None:
        good = encode_frame(1001, b"{}")
        bad = struct.pack(">IHHII", 0xDEADBEEF, 1, 1001, 2, 0) + b"{}"
        frames, error = FrameDecoder().feed(good + bad)
        assert frames == [(1001, b"{}")]
        assert isinstance(error, FrameError) and error.code == codes.BAD_FRAME

    def test_unknown_version_is_bad_frame(self) -> None:
        _, error = FrameDecoder().feed(struct.pack(">IHHII", MAGIC, 2, 1001, 0, 0))
        assert error is not None and error.code == codes.BAD_FRAME

    def test_oversized_length_rejected_before_body_is_buffered(self) -> None:
        """Only the 16 header bytes are needed to refuse a too-long frame."""
        decoder = FrameDecoder(max_length=100)
        frames, error = decoder.feed(struct.pack(">IHHII", MAGIC, 1, 1001, 101, 0))
        assert frames == [] and error is not None and error.code == codes.MSG_TOO_LARGE
        assert decoder.buffered() == 0

    def test_length_at_maximum_is_accepted(self) -> None:
        decoder = FrameDecoder(max_length=100)
        frames, error = decoder.feed(encode_frame(1001, b"x" * 100))
        assert error is None and frames == [(1001, b"x" * 100)]

    def test_custom_magic(self) -> None:
        decoder = FrameDecoder(magic=7)
        assert decoder.feed(encode_frame(1001, b"{}", magic=7)) == ([(1001, b"{}")], None)
        assert decoder.feed(encode_frame(1001, b"{}"))[1] is not None

    def test_decoder_refuses_input_after_an_error(self) -> None:
        decoder = FrameDecoder()
        decoder.feed(b"\0" * HEADER_SIZE)
        frames, error = decoder.feed(encode_frame(1001, b"{}"))
        assert frames == [] and error is not None

    def test_large_body_in_small_chunks_keeps_one_partial_buffer(self) -> None:
        """A 1 MiB body in 4 KiB reads is held once, not re-copied per read."""
        body = b"a" * (1 << 20)
        stream = encode_frame(1001, body)
        decoder = FrameDecoder()
        for i in range(0, len(stream) - 4096, 4096):
            frames, _ = decoder.feed(stream[i:i + 4096])
            assert frames == []
            assert decoder.buffered() == i + 4096
        frames, _ = decoder.feed(stream[(len(stream) - 4096) // 4096 * 4096:])
        assert frames == [(1001, body)] and decoder.buffered() == 0

    def test_protocol_answers_bad_frame_with_one_2004_and_closes(self) -> None:
        proto = Recorder()
        transport = connected(proto)
        proto.dataReceived(encode_frame(1001, b"{}") + b"JUNKJUNKJUNKJUNK"
                           + encode_frame(1001, b"{}"))
        assert proto.got == [(1001, b"{}")]
        out = FrameDecoder().feed(transport.value())[0]
        assert len(out) == 1 and json.loads(out[0][1])["code"] == codes.BAD_FRAME
        assert transport.disconnecting

    def test_protocol_answers_oversize_with_msg_too_large(self) -> None:
        proto = Recorder()
        proto.max_frame = 10
        transport = connected(proto)
        proto.dataReceived(encode_frame(1001, b"x" * 11))
        (etype, body), = FrameDecoder().feed(transport.value())[0]
        assert etype == codes.ERROR and json.loads(body)["code"] == codes.MSG_TOO_LARGE
        assert transport.disconnecting
