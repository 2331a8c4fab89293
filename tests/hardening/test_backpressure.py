"""Backpressure and stalled frames on the front connection, and router
congestion control, over fakes and a task.Clock."""

from __future__ import annotations

from pathlib import Path

from libchat.protocol.wire import HEADER_SIZE, encode_event

from .world import World, frames, user_message


def test_a_client_that_stops_reading_is_paused_and_its_replies_wait(tmp_path: Path) -> None:
    w = World(tmp_path)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message()))
    instance = w.runtime.started[-1]
    proto.pauseProducing()  # Twisted: the client's write buffer is full
    assert transport.producerState == "paused", "still reading from a client that does not read"
    assert not proto.alive()
    before = transport.value()
    instance.say({"event_type": 2001, "messages": {"content": "r1"}})
    assert transport.value() == before, "wrote into a full buffer"
    assert w.router.pending_count() == 1
    proto.resumeProducing()
    assert transport.producerState == "producing"
    assert [e["messages"]["content"] for e in frames(transport) if e["event_type"] == 2001] \
        == ["r1"]
    assert w.router.pending_count() == 0


def test_pending_past_the_high_water_mark_pauses_programs_until_drained(
        tmp_path: Path) -> None:
    w = World(tmp_path, pending_high=4)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message()))
    instance = w.runtime.started[-1]
    transport.loseConnection()
    proto.connectionLost(None)  # type: ignore[arg-type]
    for n in range(3):
        instance.say({"event_type": 2001, "messages": {"content": f"r{n}"}})
    assert w.runtime.flow == []
    instance.say({"event_type": 2001, "messages": {"content": "r3"}})
    assert w.runtime.flow == ["pause"]
    instance.say({"event_type": 2001, "messages": {"content": "r4"}})
    assert w.runtime.flow == ["pause"], "paused twice"
    proto2, transport2 = w.connect()
    assert w.runtime.flow == ["pause", "resume"]
    assert [e["messages"]["content"] for e in frames(transport2)] == [f"r{n}" for n in range(5)]


def test_a_frame_left_incomplete_closes_the_connection_after_the_timeout(
        tmp_path: Path) -> None:
    w = World(tmp_path)
    proto, transport = w.connect()
    data = encode_event(user_message())
    proto.dataReceived(data[:HEADER_SIZE + 3])
    w.clock.advance(29)
    assert not transport.disconnecting
    proto.dataReceived(data[HEADER_SIZE + 3:HEADER_SIZE + 5])  # trickling does not help
    w.clock.advance(1.5)
    assert transport.disconnecting
    (error,) = frames(transport)[-1:]
    assert (error["event_type"], error["code"]) == (2004, "BAD_FRAME")
    assert "incomplete" in error["message"]


def test_an_idle_connection_is_never_timed_out(tmp_path: Path) -> None:
    w = World(tmp_path)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message()))
    w.clock.advance(10_000)
    assert not transport.disconnecting


def test_a_steady_stream_of_frames_is_not_a_stall(tmp_path: Path) -> None:
    """Reads that each end mid-frame, but complete frames as they go."""
    w = World(tmp_path)
    proto, transport = w.connect()
    stream = b"".join(encode_event(user_message(f"echo {n}", message_id=f"m{n}"))
                      for n in range(40))
    step = len(stream) // 40 + 7  # never aligned with a frame boundary
    for off in range(0, len(stream), step):
        proto.dataReceived(stream[off:off + step])
        w.clock.advance(20)
    assert not transport.disconnecting
    assert len(w.runtime.started[-1].sent) == 40


def test_a_paused_client_is_not_timed_out_mid_frame(tmp_path: Path) -> None:
    w = World(tmp_path)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message())[:5])
    proto.pauseProducing()
    w.clock.advance(100)
    assert not transport.disconnecting
    proto.resumeProducing()
    w.clock.advance(31)
    assert transport.disconnecting
