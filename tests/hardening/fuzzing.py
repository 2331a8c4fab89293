"""Fuzz harnesses shared by the hypothesis tests and the long run
(``python -m tests.hardening.fuzz``). Each takes one input, drives the real
code over in-memory transports, and raises AssertionError when a protocol
rule is broken."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.events import BadEvent, parse_upstream
from libchat.jsonc import loads
from libchat.doors.memory_api import MemoryAPI
from libchat.storage.records import DialogRecord
from libchat.interfaces import TokenInfo
from libchat.runtimes.node.program_io import IChannelOwner, ProgramConnection
from libchat.storage.store import MemoryStore
from libchat.protocol.wire import HEADER_SIZE, MAGIC, FrameDecoder, encode_event, encode_frame

from .world import World, user_message

MAX_FRAME = 1024
ERROR_CODES = {codes.BAD_FRAME, codes.MSG_TOO_LARGE, codes.BAD_REQUEST, codes.UNKNOWN_EVENT,
               codes.BUSY, codes.INTERNAL_ERROR}


def seeds() -> list[bytes]:
    """Valid frames to mutate."""
    return [
        encode_event(user_message()),
        encode_event(user_message("echo again", intent="echo")),
        encode_event({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"}),
        encode_event({"event_type": 2001, "dialog_id": "d1", "user_id": "u1",
                      "messages": {"content": "x"}}),
        encode_frame(1001, b'{"event_type":1001}'),
        encode_frame(1001, b"not json"),
    ]


def decode_all(data: bytes) -> list[dict[str, Any]]:
    frames, error = FrameDecoder(max_length=1 << 30).feed(data)
    assert error is None, f"libchat sent a broken frame: {error}"
    events = [loads(body) for _, body in frames]
    for e in events:
        assert isinstance(e, dict) and e.get("event_type") in (2001, 2002, 2003, 2004), e
        if e["event_type"] == 2004:
            assert e["code"] in ERROR_CODES and isinstance(e["message"], str), e
    return events


class FrontWorld:
    """One router (fakes), reused across inputs so state accumulates like a
    long-lived server's."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="libchat-fuzz-")
        self.world = World(Path(self.tmp.name), max_programs=4)

    def feed(self, chunks: list[bytes]) -> None:
        """Feed one connection; check every answer, then prove a second
        connection is unaffected."""
        proto, transport = self.world.connect()
        data = b"".join(chunks)
        for chunk in chunks:
            if transport.disconnecting:
                break
            proto.dataReceived(chunk)
        out = decode_all(transport.value())
        # independently: what the input should have produced at the most
        frames, error = FrameDecoder(MAGIC, MAX_FRAME).feed(data)
        bad = 0
        for ftype, body in frames:
            try:
                parse_upstream(ftype, body)
            except BadEvent:
                bad += 1
        errors = [e for e in out if e["event_type"] == 2004]
        refused = [e for e in errors if e["code"] in (codes.BAD_REQUEST, codes.UNKNOWN_EVENT)]
        assert len(refused) >= bad, "a bad event went unanswered"
        assert not any(e["code"] == codes.INTERNAL_ERROR for e in errors), errors
        if error is not None:
            assert transport.disconnecting, "a broken stream was left open"
            assert errors and errors[-1]["code"] == error.code
        proto.connectionLost(Failure(ConnectionError()))
        self.check_other_connection()

    def check_other_connection(self) -> None:
        proto, transport = self.world.connect()
        proto.dataReceived(encode_event(user_message("echo ping", dialog_id="fuzz-ok",
                                                     user_id="fuzz")))
        out = decode_all(transport.value())
        assert not transport.disconnecting
        assert not any(e["event_type"] == 2004 and e["code"] != codes.BUSY for e in out), out
        proto.dataReceived(encode_event({"event_type": 1002, "dialog_id": "fuzz-ok",
                                         "user_id": "fuzz"}))
        proto.connectionLost(Failure(ConnectionError()))

    def close(self) -> None:
        self.tmp.cleanup()


@implementer(IChannelOwner)
class RecordingOwner:
    """An IChannelOwner that accepts its peer and checks every event."""

    def __init__(self) -> None:
        self.instance_id, self.program, self.dialog_id = "fuzz-i1", "fuzz", "d1"
        self.events: list[dict[str, Any]] = []
        self.connected = self.disconnected = False

    def peerAllowed(self, pid: int | None) -> bool:
        return True

    def channelConnected(self, connection: Any) -> None:
        self.connected = True

    def channelLost(self, connection: Any) -> None:
        self.disconnected = True

    def channelEvent(self, event: dict[str, Any]) -> None:
        assert event["event_type"] in (2001, 2002, 2003), event
        if event["event_type"] == 2001:
            assert isinstance(event["messages"]["content"], str)
        self.events.append(event)

    def processExited(self, reason: Failure) -> None:
        raise AssertionError("no process here")


def feed_program(chunks: list[bytes]) -> None:
    """Random bytes from a program: valid events reach the instance, bad
    ones get a 2004, a broken stream is closed; nothing raises."""
    owner = RecordingOwner()
    conn = ProgramConnection(owner, max_frame=MAX_FRAME)
    transport = StringTransport()
    conn.makeConnection(transport)
    assert owner.connected
    for chunk in chunks:
        if transport.disconnecting:
            break
        conn.dataReceived(chunk)
    out = decode_all(transport.value())
    assert all(e["event_type"] == 2004 for e in out)
    _, error = FrameDecoder(MAGIC, MAX_FRAME).feed(b"".join(chunks))
    if error is not None:
        assert transport.disconnecting


class Tokens:
    def token_info(self, token: str) -> TokenInfo | None:
        return TokenInfo("d1", "alice", "memo") if token == "good" else None


def memory_api() -> tuple[MemoryAPI, MemoryStore]:
    store = MemoryStore()
    store.add(DialogRecord(dialog_id="d1", user_id="alice", created_at=0, updated_at=0))
    return MemoryAPI(Tokens(), store, lambda: 1.0), store


def memory_request(api: MemoryAPI, store: MemoryStore, body: bytes,
                   headers: dict[str, str]) -> int:
    """One request; every answer is JSON and never a 5xx."""
    from treq.testing import StubTreq

    client = StubTreq(api.app.resource())
    out: list[Any] = []
    client.post("http://api/memory", data=body, headers=headers).addBoth(out.append)
    assert out and not isinstance(out[0], Failure), out
    response = out[0]
    content: list[Any] = []
    response.content().addBoth(content.append)
    answer = json.loads(content[0])
    assert response.code in (200, 400, 401, 403, 413, 415), (response.code, answer)
    if response.code != 200:
        assert isinstance(answer["code"], str) and isinstance(answer["message"], str)
    return int(response.code)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points + [len(data)]:
        chunks.append(data[last:p])
        last = p
    return [c for c in chunks if c]


__all__ = ["FrontWorld", "RecordingOwner", "feed_program", "memory_api", "memory_request", "seeds", "split",
           "HEADER_SIZE"]
