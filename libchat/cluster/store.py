"""The shared ownership, leases and transcripts, in Redis (:class:`IClusterStore`)."""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.interfaces import (Entry, IClusterStore, LeaseTaken, Ownership,
                                        StaleFence, Then)
from libchat.cluster.keys import INBOX_MAXLEN, Keys
from libchat.cluster.scripts import Scripts


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fenced(f: Any) -> None:
    """A ``FENCED`` error reply of a script is a :class:`StaleFence`."""
    if f.check(txredisapi.ResponseError) and str(f.value).startswith("FENCED"):
        raise StaleFence(str(f.value)[len("FENCED "):])
    f.raiseException()


def _entries(reply: Any) -> list[Entry]:
    out = []
    for entry_id, fields in reply or []:
        pairs = dict(zip(fields[::2], fields[1::2]))
        out.append(Entry(int(_text(entry_id).split("-", 1)[0]), bytes(pairs[b"e"])))
    return out


@implementer(IClusterStore)
class RedisClusterStore:
    """Every write that must be atomic is one of the Lua scripts; reads are
    plain commands. Failures: :class:`RedisUnavailable` (unknown outcome),
    :class:`StaleFence`, :class:`LeaseTaken`."""

    def __init__(self, conns: RedisConnections, scripts: Scripts | None = None,
                 keys: Keys | None = None) -> None:
        self.conns = conns
        self.scripts = scripts or Scripts(conns)
        self.keys = keys or Keys()

    # -- node leases ---------------------------------------------------------------

    def acquire_lease(self, node_id: str, incarnation: str, ttl_ms: int) -> defer.Deferred[None]:
        d = self.scripts.call("lease_acquire", [self.keys.lease(node_id), self.keys.nodes],
                              [incarnation, ttl_ms, node_id])

        def taken(won: int) -> None:
            if not won:
                raise LeaseTaken(f"node id {node_id} is in use by another live process")
        return d.addCallback(taken)

    def refresh_lease(self, node_id: str, incarnation: str, ttl_ms: int) -> defer.Deferred[bool]:
        d = self.scripts.call("lease_refresh", [self.keys.lease(node_id)], [incarnation, ttl_ms])
        return d.addCallback(bool)

    def drop_lease(self, node_id: str, incarnation: str) -> defer.Deferred[bool]:
        d = self.scripts.call("lease_drop", [self.keys.lease(node_id)], [incarnation])
        return d.addCallback(bool)

    def lease_holder(self, node_id: str) -> defer.Deferred[str | None]:
        d = self.conns.call("GET", self.keys.lease(node_id))
        return d.addCallback(lambda v: None if v is None else _text(v))

    # -- ownership ---------------------------------------------------------------------

    def claim(self, dialog_id: str, node_id: str, incarnation: str) -> defer.Deferred[Ownership]:
        d = self.scripts.call("claim", [self.keys.dialog(dialog_id)],
                              [self.keys.prefix, dialog_id, node_id, incarnation])
        d.addErrback(_fenced)
        return d.addCallback(lambda r: Ownership(_text(r[0]), int(r[1])))

    def owner(self, dialog_id: str) -> defer.Deferred[Ownership | None]:
        d = self.conns.call("HMGET", self.keys.dialog(dialog_id), "node", "fence")

        def parse(r: list[Any]) -> Ownership | None:
            return None if r[0] is None else Ownership(_text(r[0]), int(r[1]))
        return d.addCallback(parse)

    def release(self, dialog_id: str, incarnation: str) -> defer.Deferred[bool]:
        d = self.scripts.call("release", [self.keys.dialog(dialog_id)],
                              [self.keys.prefix, dialog_id, incarnation])
        return d.addCallback(bool)

    def owned(self, node_id: str) -> defer.Deferred[set[str]]:
        d = self.conns.call("SMEMBERS", self.keys.owned(node_id))
        return d.addCallback(lambda r: {_text(x) for x in r})

    def nodes(self) -> defer.Deferred[set[str]]:
        d = self.conns.call("SMEMBERS", self.keys.nodes)
        return d.addCallback(lambda r: {_text(x) for x in r})

    # -- the transcript ----------------------------------------------------------------

    def append(self, dialog_id: str, incarnation: str, fence: int,
               data: bytes, record: bytes = b"", then: Then | None = None) -> defer.Deferred[int]:
        keys = [self.keys.dialog(dialog_id), self.keys.log(dialog_id)]
        args: list[Any] = [self.keys.prefix, incarnation, fence, data, record]
        if then is not None:
            keys.append(self.keys.inbox(then.node))
            args += [then.payload, then.seq, INBOX_MAXLEN]
        d = self.scripts.call("append", keys, args)
        d.addErrback(_fenced)
        return d.addCallback(int)

    def put_record(self, dialog_id: str, incarnation: str, fence: int,
                   record: bytes) -> defer.Deferred[None]:
        # the append script with no entry: one owner check for both (lua/append.lua)
        return self.append(dialog_id, incarnation, fence, b"", record).addCallback(
            lambda _: None)

    def get_record(self, dialog_id: str) -> defer.Deferred[tuple[bytes | None, int]]:
        d = self.conns.call("HMGET", self.keys.dialog(dialog_id), "rec", "seq")
        return d.addCallback(lambda r: (None if r[0] is None else bytes(r[0]),
                                        0 if r[1] is None else int(r[1])))

    # -- tool memory and kept replies ---------------------------------------------------

    def memory_get(self, user_id: str, slot: str) -> defer.Deferred[bytes | None]:
        d = self.conns.call("HGET", self.keys.memory(user_id), slot)
        return d.addCallback(lambda v: None if v is None else bytes(v))

    def memory_set(self, user_id: str, slot: str, value: bytes) -> defer.Deferred[None]:
        d = self.conns.call("HSET", self.keys.memory(user_id), slot, value)
        return d.addCallback(lambda _: None)

    def keep(self, channel: str, data: bytes) -> defer.Deferred[None]:
        return self.conns.call("RPUSH", self.keys.kept(channel), data).addCallback(
            lambda _: None)

    def take_kept(self, channel: str, count: int) -> defer.Deferred[list[bytes]]:
        d = self.conns.call("LPOP", self.keys.kept(channel), count)
        return d.addCallback(lambda r: [bytes(x) for x in r or []])

    def forget_node(self, node_id: str) -> defer.Deferred[None]:
        d = self.conns.call("SREM", self.keys.nodes, node_id)
        return d.addCallback(lambda _: None)

    def upstream_join(self, channel: str, node_id: str) -> defer.Deferred[None]:
        d = self.conns.call("SADD", self.keys.upstreams(channel), node_id)
        return d.addCallback(lambda _: None)

    def upstream_leave(self, channel: str, node_id: str) -> defer.Deferred[None]:
        d = self.conns.call("SREM", self.keys.upstreams(channel), node_id)
        return d.addCallback(lambda _: None)

    def upstream_nodes(self, channel: str) -> defer.Deferred[set[str]]:
        d = self.conns.call("SMEMBERS", self.keys.upstreams(channel))
        return d.addCallback(lambda r: {_text(x) for x in r or ()})

    def read(self, dialog_id: str, after: int = 0, limit: int = 1000) -> defer.Deferred[list[Entry]]:
        # "(N" is exclusive and "N" means N-0, the id of seq N
        d = self.conns.call("XRANGE", self.keys.log(dialog_id), f"({after}", "+",
                            "COUNT", limit)
        return d.addCallback(_entries)

    def last_seq(self, dialog_id: str) -> defer.Deferred[int]:
        d = self.conns.call("HGET", self.keys.dialog(dialog_id), "seq")
        return d.addCallback(lambda v: 0 if v is None else int(v))
