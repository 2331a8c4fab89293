"""Getting events to upstreams (docs/protocol.md §2-3).

A dialog's events go to the upstream that sent its last message; if that one
cannot take them, to the newest live upstream of the dialog's channel; if
there is none, into the channel's pending queue (durable through the store)
until one connects or drains. Past ``pending_high`` waiting events the runtime
is told to pause its instances' events (backpressure, nothing is lost) and to
resume once the backlog is down to half of that.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any, Callable

from twisted.logger import Logger

from libchat.interfaces import IRuntime, IStore, IUpstream
from libchat.core.dialog import Dialog

Observer = Callable[[str, dict[str, Any]], None]


class Delivery:
    log = Logger()

    def __init__(self, runtime: IRuntime, store: IStore, observers: list[Observer], *,
                 max_pending: int, pending_high: int) -> None:
        self.runtime = runtime
        self.store = store
        self.observers = observers  # shared with the router: ("out", event) here
        self.max_pending = max_pending
        self.pending_high = pending_high
        self.upstreams: list[IUpstream] = []
        self._pending: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._total = 0  # events in every pending queue
        self._congested = False

    def restore(self, pending: dict[str, list[dict[str, Any]]]) -> None:
        """Queue again what a previous run kept for absent upstreams."""
        for channel, events in pending.items():
            self._pending[channel].extend(events)
            self._total += len(events)

    # -- upstreams -------------------------------------------------------------

    def attach(self, upstream: IUpstream) -> None:
        self.upstreams.append(upstream)
        self.drain(upstream)

    def detach(self, upstream: IUpstream) -> None:
        if upstream in self.upstreams:
            self.upstreams.remove(upstream)

    def drain(self, upstream: IUpstream) -> None:
        """Hand an upstream what waited for its channel, while it takes it."""
        queue = self._pending.get(upstream.channel)
        sent = 0
        while queue and upstream.alive():
            upstream.deliver(queue.popleft())
            sent += 1
        if sent:
            self._total -= sent
            self.store.pending_taken(upstream.channel, sent)
        if self._congested and self._total <= self.pending_high // 2:
            self._congested = False
            self.log.info("pending replies drained; programs may send again")
            self.runtime.resumeEvents()

    def pending_count(self, channel: str) -> int:
        return len(self._pending.get(channel, ()))

    # -- events ------------------------------------------------------------------

    def deliver(self, dialog: Dialog, event: dict[str, Any]) -> None:
        """Send one event of a dialog upstream, or keep it for later."""
        up = dialog.upstream
        channel = dialog.record.channel
        if up is None or not up.alive():
            up = next((u for u in reversed(self.upstreams)
                       if u.channel == channel and u.alive()), None)
            dialog.upstream = up
        for observe in self.observers:
            observe("out", event)
        if up is not None:
            up.deliver(event)
            return
        queue = self._pending[channel]
        if len(queue) >= self.max_pending:
            # the oldest is dropped only past a very large bound, and loudly
            dropped = queue.popleft()
            self._total -= 1
            self.store.pending_taken(channel, 1)
            self.log.error("pending queue full for {channel}; dropped a {etype} of {dialog_id}",
                           channel=channel, etype=dropped.get("event_type"),
                           dialog_id=dropped.get("dialog_id"))
        queue.append(event)
        self._total += 1
        self.store.pending_put(channel, event)
        if not self._congested and self._total >= self.pending_high:
            # programs block on their own socket meanwhile; nothing is lost
            self._congested = True
            self.log.warn("{count} replies wait for an upstream; pausing programs",
                          count=self._total)
            self.runtime.pauseEvents()
