"""Verified in-memory fakes of the door stores' Redis implementations
(:mod:`libchat.cluster.dedupe`, :mod:`~libchat.cluster.offline`,
:mod:`~libchat.cluster.outbox`, the operator desk's :mod:`~libchat.cluster.desk`
and :mod:`~libchat.cluster.opbook`), on the
same :class:`~libchat.cluster.testing.FakeRedis` world as the cluster fakes:
its ``task.Clock`` for expiry and ``down = True`` for an outage.

``tests/cluster/test_door_stores_contract.py`` runs one contract against each
fake and its Redis implementation (the desk's scripts too);
``tests/cluster/test_opbook_contract.py`` the operator book's.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import implementer

from libchat.cluster.dedupe import ROUTED, TTL_MS, parse_target, target_json
from libchat.cluster.keys import Keys
from libchat.cluster.opbook import RedisOperatorBook
from libchat.cluster.outbox import RedisOutbox
from libchat.cluster.testing import FakeRedis
from libchat.doors.platforms.seam import ICallbackBook, Target
from libchat.doors.postoffice.hub import DEFAULT_QUEUE_BOUND
from libchat.doors.postoffice.seam import IOfflineQueue
from libchat.doors.platforms.unified import ReplyTarget


@attrs.define
class _DoorState:
    callbacks: dict[str, tuple[bytes, float]] = attrs.Factory(dict)  # name -> (value, expires)
    targets: dict[str, bytes] = attrs.Factory(dict)
    queues: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    outboxes: dict[str, dict[str, bytes]] = attrs.Factory(dict)  # node id -> hash
    desk_leases: dict[str, tuple[bytes, float]] = attrs.Factory(dict)  # key -> (value, expires)
    desks: dict[str, dict[str, bytes]] = attrs.Factory(dict)  # key -> the tickets' hash


_states: weakref.WeakKeyDictionary[FakeRedis, _DoorState] = weakref.WeakKeyDictionary()


def door_state(world: FakeRedis) -> _DoorState:
    """The door stores' part of a fake world (shared by every node on it)."""
    state = _states.get(world)
    if state is None:
        state = _states[world] = _DoorState()
    return state


@implementer(ICallbackBook)
class FakeCallbackBook:
    """:class:`~libchat.cluster.dedupe.RedisCallbackBook` in memory."""

    def __init__(self, world: FakeRedis, ttl_ms: int = TTL_MS) -> None:
        self.world = world
        self.state = door_state(world)
        self.ttl_ms = ttl_ms
        self.hits: dict[str, int] = {}
        self.lose_answers = False  # the write lands, its answer never comes

    def accept(self, app: str, key: str, dialog_id: str,
               reply_to: ReplyTarget | None) -> defer.Deferred[bool]:
        def op() -> bool:
            now = self.world.clock.seconds()
            old = self.state.callbacks.get(key_name := f"{app}:{key}")
            if old is not None and old[1] <= now:
                old = None
            if reply_to is not None:
                self.state.targets[dialog_id] = target_json(reply_to)
            if old is None:
                self.state.callbacks[key_name] = (b"p", now + self.ttl_ms / 1000)
            if self.lose_answers:
                raise _lost()
            if old is not None and old[0] == ROUTED:
                self.hits[app] = self.hits.get(app, 0) + 1
                return True
            value = self.state.callbacks[key_name]
            self.state.callbacks[key_name] = (ROUTED, value[1])
            return False
        return self.world.run(op)

    def target(self, dialog_id: str) -> defer.Deferred[Target | None]:
        return self.world.run(lambda: parse_target(self.state.targets.get(dialog_id)))

    def dedupe_hits(self, app: str) -> int:
        return self.hits.get(app, 0)


class FakeOutbox(RedisOutbox):
    """:class:`~libchat.cluster.outbox.RedisOutbox` with its Redis steps on a
    fake world (a hash per node id; the hand-over checks the world's leases)."""

    def __init__(self, world: FakeRedis, node_id: str,
                 ready: Any = lambda: True) -> None:
        super().__init__(None, Keys(), node_id, world.clock, ready=ready,  # type: ignore[arg-type]
                         scripts=_NoScripts())  # type: ignore[arg-type]
        self.world = world
        self.state = door_state(world)

    def _hash(self, node_id: str | None = None) -> dict[str, bytes]:
        return self.state.outboxes.setdefault(node_id or self.node_id, {})

    def _write_op(self, item_id: str, raw: bytes, n: int) -> defer.Deferred[Any]:
        def op() -> int:
            self._hash().update({item_id: raw, f"{item_id}:n": str(n).encode()})
            return 2
        return self.world.run(op)

    def _progress_op(self, item_id: str, n: int) -> defer.Deferred[Any]:
        def op() -> int:
            h = self._hash()
            if item_id not in h:
                return 0
            h[f"{item_id}:n"] = str(n).encode()
            return 1
        return self.world.run(op)

    def _delete_op(self, item_id: str) -> defer.Deferred[Any]:
        def op() -> None:
            self._hash().pop(item_id, None)
            self._hash().pop(f"{item_id}:n", None)
        return self.world.run(op)

    def _load_op(self) -> defer.Deferred[dict[str, bytes]]:
        return self.world.run(lambda: dict(self._hash()))

    def _adopt_op(self, node_id: str) -> defer.Deferred[dict[str, bytes]]:
        def op() -> dict[str, bytes]:
            if self.world.holder(node_id) is not None:
                return {}
            moved = self.state.outboxes.pop(node_id, {})
            self._hash().update(moved)
            return moved
        return self.world.run(op)


class FakeDeskScripts:
    """The operator desk's Lua scripts (``lua/desk_lease.lua``, ``desk_drop``,
    ``desk_adopt``) on a fake world, called as
    :class:`~libchat.cluster.scripts.Scripts` is: ``call(name, keys, args)``.
    Each runs whole in one step, as a script does in Redis."""

    def __init__(self, world: FakeRedis) -> None:
        self.world = world
        self.state = door_state(world)

    def call(self, name: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        step = {"desk_lease": self._lease, "desk_drop": self._drop,
                "desk_adopt": self._adopt}[name]
        return self.world.run(lambda: step(keys, [_arg(a) for a in args]))

    def _holder(self, key: str) -> bytes | None:
        held = self.state.desk_leases.get(key)
        if held is not None and held[1] <= self.world.clock.seconds():
            del self.state.desk_leases[key]  # PX ran out
            held = None
        return held[0] if held is not None else None

    def _lease(self, keys: list[str], args: list[bytes]) -> bytes | None:
        """Refresh if held by ARGV[1]; take if free and ARGV[3] is "1"; the holder."""
        value, ttl_ms, may = args
        held = self._holder(keys[0])
        if held == value or (held is None and may == b"1"):
            self.state.desk_leases[keys[0]] = (value, self.world.clock.seconds()
                                               + int(ttl_ms) / 1000)
            return value
        return held

    def _drop(self, keys: list[str], args: list[bytes]) -> int:
        if self._holder(keys[0]) == args[0]:
            del self.state.desk_leases[keys[0]]
            return 1
        return 0

    def _adopt(self, keys: list[str], args: list[bytes]) -> list[bytes]:
        """Every field of hash KEYS[1] into KEYS[2], then KEYS[1] deleted."""
        moved = dict(self.state.desks.get(keys[0], {}))
        self.state.desks.setdefault(keys[1], {}).update(moved)
        self.state.desks.pop(keys[0], None)
        return list(moved.values())


def _arg(value: Any) -> bytes:
    """An argument as Redis receives it."""
    return value if isinstance(value, bytes) else str(value).encode()


class FakeOperatorBook(RedisOperatorBook):
    """:class:`~libchat.cluster.opbook.RedisOperatorBook` with its Redis steps
    on a fake world: one hash per node id (``Keys.desk``), ``adopt`` through
    :class:`FakeDeskScripts`; empty until :meth:`fetch`, writes behind."""

    def __init__(self, world: FakeRedis, node_id: str, keys: Keys | None = None) -> None:
        super().__init__(None, keys or Keys(), node_id,  # type: ignore[arg-type]
                         scripts=FakeDeskScripts(world))  # type: ignore[arg-type]
        self.world = world
        self.state = door_state(world)

    def _values_op(self) -> defer.Deferred[Any]:
        return self.world.run(lambda: list(self.state.desks.get(self.key, {}).values()))

    def _write_op(self, dialog_id: str, raw: bytes | None) -> defer.Deferred[Any]:
        def op() -> int:
            tickets = self.state.desks.setdefault(self.key, {})
            if raw is None:
                return int(tickets.pop(dialog_id, None) is not None)
            new = dialog_id not in tickets
            tickets[dialog_id] = bytes(raw)
            return int(new)
        return self.world.run(op)


class _NoScripts:
    """The fake runs no Lua (its steps are the scripts)."""


def _lost() -> Exception:
    from libchat.cluster.interfaces import RedisUnavailable
    return RedisUnavailable("redis: (fake) the answer was lost")


@implementer(IOfflineQueue)
class FakeOfflineQueue:
    """:class:`~libchat.cluster.offline.RedisOfflineQueue` in memory: every
    answer a Deferred, take-then-acknowledge, the bound per target."""

    def __init__(self, world: FakeRedis, bound: int = DEFAULT_QUEUE_BOUND,
                 sweep: float = 1.0) -> None:
        self.world = world
        self.state = door_state(world)
        self.bound = bound
        self.sweep = sweep

    def __len__(self) -> int:
        return sum(len(q) for q in self.state.queues.values())

    def earliest(self) -> float | None:
        return self.world.clock.seconds() + self.sweep

    def offer(self, target: str, sender: str, subject: Any, raw: str,
              expires: float) -> defer.Deferred[bool]:
        def op() -> bool:
            queue = self.state.queues.setdefault(target, [])
            if len(queue) >= self.bound:
                return False
            queue.append({"id": uuid.uuid4().hex, "target": target, "from": sender,
                          "subject": subject, "raw": raw, "expires": expires})
            return True
        return self.world.run(op)

    def take(self, target: str) -> defer.Deferred[list[dict[str, Any]]]:
        return self.world.run(lambda: [dict(i) for i in self.state.queues.get(target, [])])

    def delivered(self, target: str, items: list[dict[str, Any]]) -> defer.Deferred[int]:
        def op() -> int:
            ids, queue, n = {i["id"] for i in items}, self.state.queues.get(target, []), 0
            while queue and queue[0]["id"] in ids:
                queue.pop(0)
                n += 1
            return n
        return self.world.run(op)

    def expire(self, now: float) -> defer.Deferred[list[dict[str, Any]]]:
        def op() -> list[dict[str, Any]]:
            gone = []
            for queue in self.state.queues.values():
                while queue and queue[0]["expires"] <= now:
                    gone.append(queue.pop(0))
            return gone
        return self.world.run(op)


__all__ = ["FakeCallbackBook", "FakeDeskScripts", "FakeOfflineQueue", "FakeOperatorBook",
           "FakeOutbox", "door_state"]
