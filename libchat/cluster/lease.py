"""The node lease: "this node is alive" as one Redis key that expires.

Taken with ``SET NX PX 10000`` at start and extended every 2 s, only while it
still holds this process's *incarnation* (node id + a random suffix): a node
that was frozen past its lease and wakes cannot extend a lease a newer process
of the same node id took, and every claim and append it makes is refused
(the scripts compare incarnations), so nothing it does after that lands.

States:

- ``healthy``: the last refresh succeeded less than ``lost_after`` (7 s) ago;
- ``lost``: no successful refresh for 7 s, or the lease turned out to be gone.
  ``on_lost`` fires once: the node stops acknowledging and stops its own
  instances before the 10 s lease can run out under it;
- :attr:`NodeLease.steady`: healthy, with every refresh of the last full lease
  (10 s) a success: only then may a node adopt the dialogs of others, so a
  Redis outage that every node saw causes no adoption storm when it ends.

A lease found gone is taken again under a *new* incarnation: the old fences
are dead, the dialogs must be claimed afresh.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from libchat.cluster.interfaces import IClusterStore

log = Logger()

TTL = 10.0
EVERY = 2.0
LOST_AFTER = 7.0


def default_node_id() -> str:
    """host-pid-random (CONTRACT §14's default for ``--node-id``)."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def new_incarnation(node_id: str) -> str:
    return f"{node_id}~{os.urandom(6).hex()}"


class NodeLease:
    """One node's lease on a :class:`IClusterStore`, on an injected clock."""

    def __init__(self, store: IClusterStore, node_id: str, clock: Any,
                 on_lost: Callable[[], object] | None = None,
                 on_healthy: Callable[[], object] | None = None,
                 ttl: float = TTL, every: float = EVERY, lost_after: float = LOST_AFTER) -> None:
        assert every < lost_after < ttl, "refresh often, give up before the lease runs out"
        self.store = store
        self.node_id = node_id
        self.clock = clock
        self.on_lost = on_lost
        self.on_healthy = on_healthy
        self.ttl = ttl
        self.every = every
        self.lost_after = lost_after
        self.incarnation = new_incarnation(node_id)
        self.state = "starting"
        self.last_ok: float | None = None
        self.healthy_since: float | None = None
        self._rejoin = False
        self._loop: task.LoopingCall | None = None
        self._deadline: IDelayedCall | None = None

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    @property
    def steady(self) -> bool:
        """Healthy, and every heartbeat of the last full lease succeeded."""
        return (self.healthy and self.healthy_since is not None
                and self.clock.seconds() - self.healthy_since >= self.ttl)

    @property
    def age(self) -> float | None:
        """Seconds since the last successful refresh (``/healthz``'s lease age)."""
        return None if self.last_ok is None else self.clock.seconds() - self.last_ok

    # -- lifecycle ----------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Take the lease (fails with :class:`LeaseTaken` if the node id is in
        use) and keep it."""
        yield self.store.acquire_lease(self.node_id, self.incarnation, self.ttl_ms)
        self._succeeded()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.every, now=False)

    @defer.inlineCallbacks
    def stop(self, release: bool = True) -> Any:
        """Stop refreshing; with ``release`` (SIGTERM), delete the lease now so
        survivors need not wait for it to expire."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._disarm()
        was = self.state
        self.state = "stopped"
        if release and was == "healthy":
            try:
                yield self.store.drop_lease(self.node_id, self.incarnation)
            except Exception:
                log.failure("cluster: could not drop the lease of {node}", node=self.node_id)

    # -- the heartbeat ------------------------------------------------------------------

    def _tick(self) -> defer.Deferred[None]:
        """One refresh (or, after the lease was found gone, one new acquire).
        Never fails: LoopingCall would stop for good."""
        d: defer.Deferred[Any]
        if self._rejoin:
            d = self.store.acquire_lease(self.node_id, self.incarnation, self.ttl_ms)
            d.addCallback(lambda _: True)
        else:
            d = self.store.refresh_lease(self.node_id, self.incarnation, self.ttl_ms)
        return d.addCallbacks(self._refreshed, self._failed)

    def _refreshed(self, held: bool) -> None:
        if self.state == "stopped":
            return
        if held:
            if self._rejoin:
                self._rejoin = False
                log.info("cluster: node {node} holds its lease again as {inc}",
                         node=self.node_id, inc=self.incarnation)
            self._succeeded()
            return
        log.error("cluster: the lease of node {node} was gone: its dialogs are no longer "
                  "its own", node=self.node_id)
        self.healthy_since = None
        self._lose("its lease was gone")
        self.incarnation = new_incarnation(self.node_id)
        self._rejoin = True

    def _failed(self, f: Failure) -> None:
        self.healthy_since = None
        if self.state == "healthy":
            log.warn("cluster: lease refresh of {node} failed: {why}",
                     node=self.node_id, why=f.getErrorMessage())

    def _succeeded(self) -> None:
        now = self.clock.seconds()
        self.last_ok = now
        if self.healthy_since is None:
            self.healthy_since = now
        self._disarm()
        self._deadline = self.clock.callLater(
            self.lost_after, self._lose, f"it could not refresh its lease for {self.lost_after:g}s")
        if self.state != "healthy":
            was, self.state = self.state, "healthy"
            if was == "lost" and self.on_healthy is not None:
                self._notify(self.on_healthy)

    def _lose(self, why: str) -> None:
        self._disarm()
        if self.state != "healthy":
            return
        self.state = "lost"
        log.error("cluster: node {node} stops acknowledging: {why}", node=self.node_id, why=why)
        if self.on_lost is not None:
            self._notify(self.on_lost)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _notify(self, callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception:
            log.failure("cluster: a lease callback failed")
