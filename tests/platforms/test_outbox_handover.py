"""The platform door on the cluster outbox (the verified fake of
:class:`libchat.cluster.outbox.RedisOutbox` on one FakeRedis world): a
survivor that takes a dead node's outbox sends what is left of it, in order,
without the parts the dead node already had accepted; the old node, if it
wakes, lets go of a handed-over item after at most one more part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from libchat.cluster.testing import FakeRedis
from libchat.cluster.testing_doors import FakeCallbackBook, FakeOutbox
from libchat.doors.platforms import outbound as ob
from libchat.doors.platforms.door import PlatformDoor
from libchat.doors.platforms.ledger import Ledger
from libchat.storage.store import run_inline
from libchat.testing import FakeRouter

from .test_door import LARK, WECOM
from .test_door_cluster import post_text
from .test_sender import ScriptedAPI

LONG = "数据" * 850  # 5,100 bytes: three WeCom parts


class Node:
    def __init__(self, tmp_path: Path, world: FakeRedis, name: str) -> None:
        self.clock, self.router = Clock(), FakeRouter()
        self.outbox = FakeOutbox(world, name)
        self.door = PlatformDoor(self.router, Ledger(tmp_path / name, run_inline, self.clock),
                                 self.clock, [WECOM], [LARK], callbacks=FakeCallbackBook(world),
                                 outbox=self.outbox)
        self.outbox.on_items = self.door.resume
        self.sender = self.door.senders[("wecom", "hr")]
        self.sender.api = self.api = ScriptedAPI()
        self.http = StubTreq(self.door.app.resource())

    def post(self) -> int:
        return post_text(self.http, self.clock)

    def reply(self, text: str) -> None:
        self.door.deliver("wecom", {"event_type": 2001, "dialog_id": "wecom:hr:lisi",
                                    "messages": {"content": text}})


def test_a_survivor_sends_the_rest_of_a_dead_nodes_outbox_in_order_without_resending(
        tmp_path: Path, logged: Any) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    assert a.post() == 200
    a.reply(LONG)
    a.reply("and then")  # waits behind the long one
    a.api.answer(ob.OK)  # part 0 accepted (its progress is in the outbox)
    a.api.answer(ob.RETRY)  # part 1 refused: a backs off ... and dies
    assert len(a.api.calls) == 2
    b.outbox.adopt("a")
    texts = b.api.texts()
    assert len(texts) == 1 and LONG.startswith(a.api.texts()[0]) and texts[0] == a.api.texts()[1]
    b.api.answer(ob.OK)
    b.api.answer(ob.OK)
    assert a.api.texts()[0] + "".join(b.api.texts()[:2]) == LONG, "no part twice, none lost"
    b.api.answer(ob.OK)
    assert b.api.texts()[2] == "and then"
    assert b.outbox.items == {} and world_hash(world, "b") == {}
    assert world_hash(world, "a") == {}
    logged.allow("sent by another node")


def test_a_woken_node_lets_go_of_a_handed_over_item_after_at_most_one_part(
        tmp_path: Path, logged: Any) -> None:
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    assert a.post() == 200
    a.reply(LONG)
    a.api.answer(ob.RETRY)  # part 0 refused: a backs off (and is taken for dead)
    b.outbox.adopt("a")
    assert len(b.api.calls) == 1
    a.clock.advance(ob.backoff(1))  # a wakes: its retry of part 0 goes out
    a.api.answer(ob.OK)  # ... its progress finds the item gone
    assert len(a.api.calls) == 2, "part 1 is not sent by the old node"
    assert a.outbox.items == {}
    logged.allow("sent by another node")


def world_hash(world: FakeRedis, node: str) -> dict[str, bytes]:
    from libchat.cluster.testing_doors import door_state
    return door_state(world).outboxes.get(node, {})


def test_a_lark_part_sent_again_after_a_hand_over_carries_the_same_uuid(
        tmp_path: Path, logged: Any) -> None:
    """So Lark drops the copy if the dead node's send had in fact landed."""
    from libchat.doors.platforms.unified import ReplyTarget
    world = FakeRedis()
    a, b = Node(tmp_path, world, "a"), Node(tmp_path, world, "b")
    a.door.callbacks.accept("lark:bot", "e1", "lark:bot:oc:ou", ReplyTarget("oc", "ou"))
    lark_a, lark_b = a.door.senders[("lark", "bot")], b.door.senders[("lark", "bot")]
    lark_a.api, lark_b.api = ScriptedAPI(), ScriptedAPI()
    a.door.deliver("lark", {"event_type": 2001, "dialog_id": "lark:bot:oc:ou",
                            "messages": {"content": "hi"}})
    lark_a.api.answer(ob.RETRY)  # no answer the node could trust; then it dies
    b.outbox.adopt("a")
    [(first, _)], [(again, _)] = lark_a.api.calls[:1], lark_b.api.calls
    assert again["uuid"] == first["uuid"] and again["content"] == first["content"]
    lark_b.api.answer(ob.OK)
    assert b.outbox.items == {}
