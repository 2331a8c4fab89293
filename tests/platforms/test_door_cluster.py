"""The platform door on a cluster-wide callback book (the verified fake of
:class:`libchat.cluster.dedupe.RedisCallbackBook`, on one FakeRedis world per
test): a retry to another node routes nothing, a Redis that does not answer
gets the platform a 503 and routes nothing, and the node sending a dialog's
replies finds the target another node's callback recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from libchat.cluster.testing import FakeRedis
from libchat.cluster.testing_doors import FakeCallbackBook
from libchat.doors.platforms import outbound as ob
from libchat.doors.platforms.door import PlatformDoor
from libchat.doors.platforms.ledger import Ledger
from libchat.storage.store import run_inline
from libchat.testing import FakeRouter

from .test_callbacks import TEXT_XML, wecom_post
from .test_door import LARK, WECOM
from .test_sender import ScriptedAPI


def post_text(http: StubTreq, clock: Clock) -> int:
    """A signed WeCom text callback to the door; its HTTP status."""
    query, body = wecom_post(TEXT_XML)
    got: list[Any] = []
    http.post("http://h/wecom/hr", body, params=query).addCallback(got.append)
    clock.advance(0)
    return int(got[0].code)


class Node:
    """One libchat node's platform door, on the shared world."""

    def __init__(self, tmp_path: Path, world: FakeRedis, name: str) -> None:
        self.clock, self.router = Clock(), FakeRouter()
        self.book = FakeCallbackBook(world)
        self.door = PlatformDoor(self.router, Ledger(tmp_path / name, run_inline, self.clock),
                                 self.clock, [WECOM], [LARK], callbacks=self.book)
        for upstream in self.door.upstreams.values():
            self.router.attach(upstream)
        self.http = StubTreq(self.door.app.resource())

    def post(self) -> int:
        return post_text(self.http, self.clock)


def test_a_retry_to_another_node_is_answered_and_routes_nothing(tmp_path: Path) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    assert a.post() == 200 and b.post() == 200 and a.post() == 200
    assert len(a.router.received) == 1 and b.router.received == []
    assert b.door.senders[("wecom", "hr")].stats.callbacks == {"200": 1}
    assert b.book.dedupe_hits("wecom:hr") == 1


def test_redis_not_answering_is_a_503_and_the_retry_after_it_routes_once(
        tmp_path: Path, logged: Any) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    world.down = True
    assert a.post() == 503
    assert a.router.received == []
    world.down = False
    a.book.lose_answers = True  # the write lands, its answer is lost: 503 again
    assert a.post() == 503
    assert a.router.received == []
    assert b.post() == 200, "a lost answer never makes the retry a repeat"
    assert len(b.router.received) == 1 and a.router.received == []
    assert b.post() == 200 and len(b.router.received) == 1
    assert a.door.senders[("wecom", "hr")].stats.callbacks == {"503": 2}
    assert logged.errors() == []


def test_replies_sent_by_another_node_use_the_target_its_callback_recorded(
        tmp_path: Path) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    assert a.post() == 200  # FromUserName lisi
    sender = b.door.senders[("wecom", "hr")]
    api = ScriptedAPI()
    sender.api = api
    sender.reply({"event_type": 2001, "dialog_id": "wecom:hr:lisi",
                  "messages": {"content": "sunny"}})
    assert [body["touser"] for body, _ in api.calls] == ["lisi"]
    api.answer(ob.OK)
    assert sender.stats.sent == 1 and not b.door.ledger.items


def test_a_target_unknown_while_redis_is_down_is_asked_again_with_the_back_off(
        tmp_path: Path, logged: Any) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    assert a.post() == 200
    sender = b.door.senders[("wecom", "hr")]
    sender.api = api = ScriptedAPI()
    world.down = True
    sender.reply({"event_type": 2001, "dialog_id": "wecom:hr:lisi",
                  "messages": {"content": "sunny"}})
    assert api.calls == [] and sender.stats.retries == 1
    world.down = False
    b.clock.advance(ob.backoff(1))
    assert [body["touser"] for body, _ in api.calls] == ["lisi"]
    assert sender.stats.failures == 0
