"""Property tests (bounded; the long run is ``python -m tests.hardening.fuzz``):
random and mutated frames into the front protocol and a program socket,
random bodies into the memory API. No unhandled exception, every input
answered per docs/protocol.md §1, docs/protocol.md §2-3, docs/protocol.md §7, other connections unaffected."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libchat.protocol.wire import HEADER, MAGIC, VERSION

from .fuzzing import FrontWorld, feed_program, memory_api, memory_request, seeds, split

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)

events = st.fixed_dictionaries({}, optional={
    "event_type": st.sampled_from([1001, 1002, 1003, 2001, 2004, 0, -1, "1001", None]),
    "dialog_id": st.one_of(st.sampled_from(["d1", "d2", "../x", ""]), st.text(max_size=140)),
    "user_id": st.one_of(st.sampled_from(["u1", "u2"]), st.text(max_size=300), st.integers()),
    "message_id": st.one_of(st.text(max_size=10), st.integers()),
    "intent": st.one_of(st.sampled_from(["echo", "nope", "../echo"]), st.text(max_size=5)),
    "messages": st.one_of(st.fixed_dictionaries(
        {"content": st.one_of(st.text(max_size=20), st.integers())},
        optional={"attachments": json_values}), json_values),
})


def framed(body: bytes, ftype: int, magic: int = MAGIC, version: int = VERSION,
           length: int | None = None) -> bytes:
    return HEADER.pack(magic, version, ftype, len(body) if length is None else length, 0) + body


@st.composite
def frame_streams(draw: Any) -> list[bytes]:
    import json

    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["event", "seed", "raw", "header"]))
        if kind == "event":
            event = draw(events)
            body = json.dumps(event).encode()
            ftype = event.get("event_type") if isinstance(event.get("event_type"), int) \
                and 0 <= event["event_type"] < 65536 else draw(st.integers(0, 65535))
            parts.append(framed(body, draw(st.sampled_from([ftype, ftype, 1001, 7]))))
        elif kind == "seed":
            data = bytearray(draw(st.sampled_from(seeds())))
            for _ in range(draw(st.integers(0, 3))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            parts.append(bytes(data))
        elif kind == "raw":
            parts.append(draw(st.binary(max_size=64)))
        else:
            parts.append(framed(b"", 1001, length=draw(st.integers(0, 1 << 32 - 1))))
    data = b"".join(parts)
    return split(data, draw(st.lists(st.integers(0, 1 << 16), max_size=6)))


@pytest.fixture(scope="module")
def front() -> Any:
    world = FrontWorld()
    yield world
    world.close()


@SETTINGS
@given(frame_streams())
def test_front_protocol_answers_everything_and_isolates_connections(
        front: FrontWorld, chunks: list[bytes]) -> None:
    front.feed(chunks)


@SETTINGS
@given(frame_streams())
def test_program_socket_survives_anything(chunks: list[bytes]) -> None:
    feed_program(chunks)


@SETTINGS
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda v: __import__("json").dumps(v).encode(), json_values),
                 st.builds(lambda action, key, value, user: __import__("json").dumps(
                     {"event_type": 3000, "action": action, "key": key, "value": value,
                      "user_id": user}).encode(),
                     st.sampled_from(["save_tool_memory", "query_tool_memory", "x"]),
                     st.one_of(st.text(max_size=300), st.integers()), json_values,
                     st.sampled_from(["alice", "bob", 3]))),
       st.sampled_from(["Bearer good", "Bearer bad", "", "good"]),
       st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8"]))
def test_memory_api_answers_every_body_with_json_and_no_5xx(
        body: bytes, auth: str, ctype: str) -> None:
    api, store = memory_api()
    status = memory_request(api, store, body, {"Authorization": auth, "Content-Type": ctype})
    if status != 200:
        assert not store._memory, "a refused request wrote something"


def test_the_fuzz_owner_is_a_declared_channel_owner() -> None:
    """The program-socket harness drives ProgramConnection through the same
    IChannelOwner interface NodeInstance implements (no hidden interface)."""
    from zope.interface.verify import verifyObject

    from libchat.runtimes.node.program_io import IChannelOwner
    from libchat.runtimes.node.runner import NodeInstance

    from .fuzzing import RecordingOwner

    assert verifyObject(IChannelOwner, RecordingOwner())
    assert IChannelOwner.implementedBy(NodeInstance)
