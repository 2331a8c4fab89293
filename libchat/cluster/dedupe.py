"""Platform callback dedupe and reply targets in Redis (CONTRACT §10, §14).

WeCom retries a callback it got no answer to, and behind a load balancer the
retry may reach another node: "route once" must hold cluster-wide, so the set
of taken callback ids lives in Redis, one string per id (``SET NX PX``, 8 h
like :data:`libchat.doors.platforms.dedupe.TTL`). So do the reply targets: the
node that sends a dialog's replies (its owner) is not always the node that
took its callback.

Why a two-state value, ``p`` then ``r``: a ``SET NX`` that landed but whose
answer was lost (a timeout) would make the platform's retry look like a
repeat, and the message would be lost. So the first taker writes ``p``
(pending), and confirms ``r`` as soon as it has the answer; a retry that
finds ``p`` is taken again (a node that wrote ``p`` and answered 503, or died
before routing, may not have routed it). The cost: a retry arriving within
one Redis round trip of the first delivery, on another node, is routed twice
(platforms retry after seconds, not milliseconds). Never a lost message, never
a false "seen".
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.keys import Keys
from libchat.doors.platforms.dedupe import TTL
from libchat.doors.platforms.seam import ICallbackBook, Target
from libchat.doors.platforms.unified import ReplyTarget

log = Logger()

TTL_MS = int(TTL * 1000)
PENDING, ROUTED = b"p", b"r"


def target_json(reply_to: ReplyTarget) -> bytes:
    """A reply target as the ledger keeps it: ``{"to", "m"}``."""
    return orjson.dumps({"to": reply_to.to, "m": reply_to.mention})


def parse_target(raw: Any) -> Target | None:
    if raw is None:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None


@implementer(ICallbackBook)
class RedisCallbackBook:
    """The cluster-wide :class:`ICallbackBook`: every answer is a Deferred,
    fired once Redis answered (so acknowledged, fsynced); a Redis that does
    not answer in the call timeout fails it with ``RedisUnavailable``."""

    def __init__(self, conns: RedisConnections, keys: Keys, ttl_ms: int = TTL_MS) -> None:
        self.conns = conns
        self.keys = keys
        self.ttl_ms = ttl_ms
        self.hits: dict[str, int] = {}

    def accept(self, app: str, key: str, dialog_id: str,
               reply_to: ReplyTarget | None) -> defer.Deferred[bool]:
        name = self.keys.callback(app, key)
        # NX with GET (Redis >= 7): the old value, or None when we set it
        calls = [self.conns.call("SET", name, PENDING, "NX", "GET", "PX", self.ttl_ms)]
        if reply_to is not None:
            # idempotent and harmless for a repeat; written before we answer,
            # so the node sending the replies finds it
            calls.append(self.conns.call("HSET", self.keys.reply_targets, dialog_id,
                                         target_json(reply_to)))
        d = defer.gatherResults(calls, consumeErrors=True)
        d.addErrback(_first_error)

        def taken(replies: list[Any]) -> bool | defer.Deferred[bool]:
            if replies[0] == ROUTED:
                self.hits[app] = self.hits.get(app, 0) + 1
                return True
            return self._confirm(name).addCallback(lambda _: False)
        return d.addCallback(taken)

    def _confirm(self, name: str) -> defer.Deferred[None]:
        """``p`` -> ``r``: later deliveries are repeats. Waited for (one more
        round trip, so a repeat is known to be one once we answered), but a
        failure is only logged: the id stays ``p`` and a retry is routed
        again (a duplicate, never a loss)."""
        d = self.conns.call("SET", name, ROUTED, "XX", "KEEPTTL")
        return d.addCallbacks(lambda _: None, lambda f: log.warn(
            "platform dedupe: confirming {key} failed: {why}", key=name,
            why=f.getErrorMessage()))

    def target(self, dialog_id: str) -> defer.Deferred[Target | None]:
        return self.conns.call("HGET", self.keys.reply_targets, dialog_id).addCallback(
            parse_target)

    def dedupe_hits(self, app: str) -> int:
        return self.hits.get(app, 0)


def _first_error(f: Any) -> Any:
    """gatherResults wraps a failure in FirstError: unwrap it (callers check
    for ``Unavailable``)."""
    if f.check(defer.FirstError):
        return f.value.subFailure
    return f


__all__ = ["RedisCallbackBook", "TTL_MS", "parse_target", "target_json"]
