"""The hub core without sockets: routing, error frames, the offline queue, IHub."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from libchat.doors.postoffice.hub import BadMessage, Hub, OfflineQueue, check_envelope
from libchat.doors.postoffice.seam import IHub, IHubListener


class Conn:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.sent: list[str] = []
        self.closed: str | None = None

    def send(self, text: str) -> None:
        self.sent.append(text)

    def replaced(self, reason: str) -> None:
        self.closed = reason

    def frames(self) -> list[Any]:
        return [json.loads(t) for t in self.sent]


@implementer(IHubListener)
class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    def envelope(self, message: dict[str, Any], raw: str) -> None:
        self.heard.append(("envelope", raw))

    def client_connected(self, client_id: str) -> None:
        self.heard.append(("connected", client_id))

    def client_gone(self, client_id: str) -> None:
        self.heard.append(("gone", client_id))


def env(frm: str, to: Any, type: str = "msg", **more: Any) -> str:
    return json.dumps({"from": frm, "to": to, "subject": "s", "content": "c",
                       "type": type, **more}, ensure_ascii=False)


def hub_with(*ids: str, clock: Clock | None = None, **kw: Any) -> tuple[Hub, list[Conn]]:
    hub = Hub(clock or Clock(), **kw)
    conns = [Conn(i) for i in ids]
    for c in conns:
        hub.attach(c, None)
    return hub, conns


def test_hub_provides_ihub() -> None:
    assert verifyObject(IHub, Hub(Clock()))


def test_string_to_delivered_as_exact_text() -> None:
    hub, (a, b) = hub_with("a", "b")
    raw = env("a", "b", extra={"x": 1}) + "  "
    hub.receive(a, raw)
    assert b.sent == [raw] and a.sent == []


def test_list_to_reaches_every_target() -> None:
    hub, (a, b, c) = hub_with("a", "b", "c")
    raw = env("a", ["b", "c"])
    hub.receive(a, raw)
    assert b.sent == [raw] and c.sent == [raw]


def test_spoofed_from_is_forbidden_and_not_delivered() -> None:
    hub, (a, b) = hub_with("a", "b")
    hub.receive(a, env("b", "b"))
    assert [f["code"] for f in a.frames()] == ["FORBIDDEN"] and b.sent == []


def test_bad_envelopes_get_bad_message() -> None:
    hub, (a,) = hub_with("a")
    for raw in ["nope", "[]", json.dumps({"from": "a"}), env("a", "b", type="chat"),
                env("a", []), env("a", 5)]:
        hub.receive(a, raw)
    assert [f["code"] for f in a.frames()] == ["BAD_MESSAGE"] * 6


def test_offline_message_delivered_on_connect_in_order() -> None:
    hub, (a,) = hub_with("a")
    first, second = env("a", "b", n=1), env("a", "b", n=2)
    hub.receive(a, first)
    hub.receive(a, second)
    assert len(hub.queue) == 2
    b = Conn("b")
    hub.attach(b, None)
    assert b.sent == [first, second] and len(hub.queue) == 0


def test_heartbeat_to_absent_target_is_not_queued() -> None:
    hub, (a,) = hub_with("a")
    hub.receive(a, env("a", "b", type="heartbeat"))
    assert len(hub.queue) == 0 and a.sent == []


def test_expired_message_bounces_undeliverable_to_sender() -> None:
    clock = Clock()
    hub, (a,) = hub_with("a", clock=clock, offline_ttl=10)
    hub.receive(a, env("a", "b"))
    clock.advance(11)           # the hub's own timer, no call from the test
    [frame] = a.frames()
    assert frame["code"] == "UNDELIVERABLE" and frame["to"] == "b"
    hub.attach(Conn("b"), None)
    assert hub.stats["bounces"] == 1


def test_over_the_queue_bound_bounces() -> None:
    hub, (a,) = hub_with("a", queue=OfflineQueue(None, bound=2))
    for n in range(3):
        hub.receive(a, env("a", "b", n=n))
    assert [f["code"] for f in a.frames()] == ["UNDELIVERABLE"] and len(hub.queue) == 2


def test_queue_survives_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    hub, (a,) = hub_with("a", queue=OfflineQueue(path, 10))
    raw = env("a", "b", content="北京")
    hub.receive(a, raw)
    with open(path, "ab") as f:
        f.write(b'{"torn')          # a crash mid-append loses only that line
    again = Hub(Clock(), queue=OfflineQueue(path, 10))
    b = Conn("b")
    again.attach(b, None)
    assert b.sent == [raw]
    assert OfflineQueue(path, 10).take("b") == []


def test_newest_connection_replaces_the_old() -> None:
    hub, (old,) = hub_with("a")
    listener = Listener()
    hub.listen("/libchat/", listener)
    new = Conn("a")
    hub.attach(new, None)
    assert old.closed and hub.conns["a"] is new
    hub.detach(old)
    assert hub.clients() == ["a"] and ("gone", "a") not in listener.heard


def test_older_start_time_is_refused() -> None:
    hub = Hub(Clock())
    hub.attach(Conn("a"), 2000.0)
    assert hub.older("a", 1000.0) and not hub.older("a", 3000.0) and not hub.older("b", 1.0)


def test_internal_prefix_goes_to_listener_and_send_reaches_clients() -> None:
    hub, (a,) = hub_with("a")
    listener = Listener()
    hub.listen("/libchat/dialog/", listener)
    raw = env("a", "/libchat/dialog/d1")
    hub.receive(a, raw)
    assert listener.heard == [("envelope", raw)] and len(hub.queue) == 0
    assert hub.internal("/libchat/dialog/x")
    assert hub.send({"from": "/libchat/dialog/d1", "to": "a", "subject": "s",
                     "content": "hi", "type": "msg"})
    assert a.frames()[-1]["content"] == "hi"
    assert not hub.send({"from": "/libchat/dialog/d1", "to": "zz", "subject": "s",
                         "content": "hi", "type": "msg"})
    assert len(hub.queue) == 0


def test_listeners_hear_connects_and_disconnects() -> None:
    hub = Hub(Clock())
    listener = Listener()
    hub.listen("/libchat/", listener)
    c = Conn("x")
    hub.attach(c, None)
    hub.detach(c)
    assert listener.heard == [("connected", "x"), ("gone", "x")]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                           max_leaves=10)
fields = st.dictionaries(st.sampled_from(["from", "to", "subject", "content", "type", "x"]),
                         json_values | st.sampled_from(["a", "b", "msg", "log", "heartbeat"]))

near_valid = st.fixed_dictionaries({
    "from": st.sampled_from(["a", "b"]),
    "to": st.sampled_from(["a", "b", "c"]) | st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    "subject": st.text(max_size=3) | st.integers(),
    "content": json_values,
    "type": st.sampled_from(["msg", "log", "heartbeat", "x"])})


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), fields.map(json.dumps), near_valid.map(json.dumps)))
def test_every_input_is_answered_or_routed(raw: str) -> None:
    hub, (a, b) = hub_with("a", "b")
    hub.receive(a, raw)          # never raises
    try:
        message = check_envelope(raw)
    except BadMessage:
        assert [f["code"] for f in a.frames()] == ["BAD_MESSAGE"]
        return
    if message["from"] != "a":
        assert [f["code"] for f in a.frames()] == ["FORBIDDEN"]
        return
    targets = [message["to"]] if isinstance(message["to"], str) else message["to"]
    queued = [t for t in targets if t not in ("a", "b")]
    if message["type"] == "heartbeat":
        queued = []
    assert len(a.sent) == targets.count("a") and len(b.sent) == targets.count("b")
    assert len(hub.queue) == len(queued)
