"""Doorbells between nodes and pub/sub for web fan-out, over Redis (:class:`IBus`).

A doorbell is one ``XADD`` to the owner's inbox stream; the owner reads its
inbox with ``XREAD BLOCK`` on the blocking connection and keeps the id of the
last doorbell it saw, so after a reconnect (or a Redis restart: the stream is
in the AOF) it resumes where it was. A doorbell lost anyway (a node that was
not listening) costs latency until the periodic reconcile, not data: the data
never rides on the doorbell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.interfaces import IBus, RedisUnavailable
from libchat.cluster.keys import INBOX_MAXLEN, Keys

log = Logger()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def guarded(what: str, callback: Callable[..., object]) -> Callable[..., object]:
    """A callback whose errors (raised, or a failed Deferred) are logged, never
    propagated: a periodic job or a reader loop must not die of one."""
    def run(*args: Any) -> object:
        try:
            d = defer.maybeDeferred(callback, *args)
        except Exception:  # pragma: no cover - maybeDeferred catches
            return None
        d.addErrback(lambda f: log.failure("cluster: {what} failed", f, what=what))
        return d
    return run


@implementer(IBus)
class RedisBus:
    """One node's doorbell reader, reconcile timer and subscriptions."""

    def __init__(self, conns: RedisConnections, clock: Any, keys: Keys | None = None,
                 block_ms: int = 5000, retry_after: float = 0.2) -> None:
        self.conns = conns
        self.clock = clock
        self.keys = keys or Keys()
        self.block_ms = block_ms
        self.retry_after = retry_after
        self.last_id: str | None = None
        self.reads = 0  # XREAD calls made (a gauge of the reader loop's health)
        self._callback: Callable[[str], object] | None = None
        self._on_message: Callable[[bytes], object] = lambda m: None
        self._inbox = ""
        self._inflight: defer.Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._loops: list[task.LoopingCall] = []
        self._stopped = False
        self._failing = False

    # -- doorbells -------------------------------------------------------------------

    def ring(self, node_id: str, dialog_id: str) -> defer.Deferred[None]:
        d = self.conns.call("XADD", self.keys.inbox(node_id), "MAXLEN", "~", INBOX_MAXLEN,
                            "*", "d", dialog_id)
        return d.addCallback(lambda _: None)

    def send(self, node_id: str, payload: bytes) -> defer.Deferred[None]:
        d = self.conns.call("XADD", self.keys.inbox(node_id), "MAXLEN", "~", INBOX_MAXLEN,
                            "*", "m", payload)
        return d.addCallback(lambda _: None)

    @defer.inlineCallbacks
    def listen(self, node_id: str, callback: Callable[[str], object],
               on_message: Callable[[bytes], object] | None = None) -> Any:
        assert self._callback is None, "already listening"
        self._inbox = self.keys.inbox(node_id)
        self._callback = guarded("a doorbell handler", callback)
        self._on_message = guarded("an inbox message handler", on_message or (lambda m: None))
        newest = yield self.conns.call("XREVRANGE", self._inbox, "+", "-", "COUNT", 1)
        self.last_id = _text(newest[0][0]) if newest else "0-0"
        self._read()

    def _read(self) -> None:
        self._retry = None
        if self._stopped:
            return
        self.reads += 1
        d = self.conns.block("XREAD", "COUNT", 100, "BLOCK", self.block_ms,
                             "STREAMS", self._inbox, self.last_id,
                             timeout=self.block_ms / 1000 + self.conns.timeout)
        self._inflight = d
        d.addCallbacks(self._got, self._failed)

    def _got(self, reply: Any) -> None:
        self._inflight = None
        if self._failing:
            self._failing = False
            log.info("cluster: reading inbox {inbox} again", inbox=self._inbox)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = _text(entry_id)
                pairs = dict(zip(fields[::2], fields[1::2]))
                if b"d" in pairs and self._callback is not None:
                    self._callback(_text(pairs[b"d"]))
                elif b"m" in pairs:
                    self._on_message(bytes(pairs[b"m"]))
        self._read()

    def _failed(self, f: Failure) -> None:
        self._inflight = None
        if self._stopped:
            return
        if not f.check(RedisUnavailable):
            log.failure("cluster: reading inbox {inbox} failed", f, inbox=self._inbox)
        elif not self._failing:
            log.warn("cluster: cannot read inbox {inbox}: {why}; retrying",
                     inbox=self._inbox, why=f.getErrorMessage())
        self._failing = True
        self._retry = self.clock.callLater(self.retry_after, self._read)

    def on_reconcile(self, callback: Callable[[], object], every: float) -> None:
        loop = task.LoopingCall(guarded("reconcile", callback))
        loop.clock = self.clock
        self._loops.append(loop)
        loop.start(every, now=False)

    # -- web fan-out -----------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> defer.Deferred[int]:
        return self.conns.call("PUBLISH", self.keys.channel(channel), payload).addCallback(int)

    def subscribe(self, channel: str, callback: Callable[[bytes], object]) -> defer.Deferred[None]:
        d = self.conns.subscribe(self.keys.channel(channel).encode(), callback)
        return d.addCallback(lambda _: None)

    def unsubscribe(self, channel: str) -> defer.Deferred[None]:
        d = self.conns.unsubscribe(self.keys.channel(channel).encode())
        return d.addCallback(lambda _: None)

    def stop(self) -> defer.Deferred[None]:
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._inflight is not None:
            self._inflight.cancel()
        return defer.succeed(None)
