"""One libchat node of a cluster (``--redis``; CONTRACT §14, docs/scaleout.md).

:class:`ClusterNode` holds what a node shares with the others: its three Redis
connections, its lease, its inbox reader and subscriptions, and the
:class:`~libchat.cluster.dialogs.SharedDialogStore` the local router writes
through. ``tap.py`` builds it before the router and hands the router to
:meth:`ClusterNode.wrap`; the service starts it (:meth:`start`: connect, check
the server, take the lease, read the inbox) and stops it last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.core import Metric
from twisted.internet import defer, task
from twisted.logger import Logger

from libchat.cluster.bus import RedisBus
from libchat.cluster.connect import RedisConnections, parse_redis, server_info
from libchat.cluster.connect import MIN_VERSION, RedisNotSuitable
from libchat.cluster.dialogs import SharedDialogStore
from libchat.cluster.interfaces import LeaseTaken
from libchat.cluster.lease import TTL, NodeLease
from libchat.cluster.router import ClusterRouter
from libchat.cluster.store import RedisClusterStore
from libchat.core.router import Router
from libchat.jsonc import dumps, loads

log = Logger()

WEB = "web"  # the pub/sub channel of web events


class ClusterNode:
    def __init__(self, reactor: Any, node_id: str, endpoint: str,
                 password: str | None = None) -> None:
        self.reactor = reactor
        self.node_id = node_id
        self.conns = RedisConnections(reactor, parse_redis(endpoint), password)
        self.cluster = RedisClusterStore(self.conns)
        self.bus = RedisBus(self.conns, reactor)
        self.lease = NodeLease(self.cluster, node_id, reactor, on_lost=self._lost,
                               on_healthy=self._healthy)
        self.store = SharedDialogStore(self.cluster, reactor, lambda: self.lease.incarnation)
        self.router: ClusterRouter | None = None
        self.durable: bool | None = None  # appendonly yes + appendfsync always
        self.gateway: Any = None  # the web gateway, for the fan-out
        self.desk: Any = None  # the operator desk's part on this node (libchat.cluster.desk)
        self.published = 0

    def wrap(self, engine: Router) -> ClusterRouter:
        self.router = ClusterRouter(engine, self.store, self.cluster, self.bus, self.lease,
                                    self.reactor, self.node_id)
        return self.router

    def serve_desk(self, runtime: Any, library: Any) -> Any:
        """One operator desk for the cluster (libchat.cluster.desk): returns
        the IOperatorDesk the web door uses on this node."""
        from libchat.cluster.desk import ClusterDesk
        assert self.router is not None
        self.desk = ClusterDesk(runtime, runtime.book, library, self.router, self.reactor)
        return self.desk

    def serve_web(self, gateway: Any) -> None:
        """Web events reach every node's sockets (pub/sub); gaps are replayed."""
        self.gateway = gateway
        gateway.fanout = self._publish

    def _publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        d = self.bus.publish(WEB, dumps(event))
        d.addErrback(lambda f: log.warn("cluster: a web event of {dialog_id} was not published "
                                        "({why}); clients replay it (1003 / after)",
                                        dialog_id=event.get("dialog_id"),
                                        why=f.getErrorMessage()))

    def _web_event(self, payload: bytes) -> None:
        if self.gateway is not None:
            self.gateway.deliver_local(loads(payload))

    # -- lifecycle -------------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Connect, check the server, take the lease (waiting out a previous
        process of the same node id), then serve."""
        assert self.router is not None
        yield self.conns.ready()
        info = yield server_info(self.conns)
        if info.version < MIN_VERSION:
            raise RedisNotSuitable(f"libchat: Redis at {self.conns.address} is version "
                                   f"{'.'.join(map(str, info.version))}; libchat needs >= 7")
        self.durable = info.durable
        if not info.durable:
            log.error("cluster: Redis at {address} has appendonly {ao}, appendfsync {fs}: "
                      "an acknowledged write can be lost in a crash; set appendonly yes and "
                      "appendfsync always", address=str(self.conns.address),
                      ao="yes" if info.appendonly else "no", fs=info.appendfsync)
        deadline = self.reactor.seconds() + TTL + 2
        waited = False
        while True:
            try:
                yield self.lease.start()
                break
            except LeaseTaken:
                if self.reactor.seconds() > deadline:
                    raise RedisNotSuitable(
                        f"libchat: --node-id {self.node_id} is held by another live node; "
                        "give each node its own --node-id") from None
                if not waited:
                    waited = True
                    log.info("cluster: node id {node} is still leased (a previous process?); "
                             "waiting up to {s:g}s for it to expire", node=self.node_id,
                             s=TTL + 2)
                yield task.deferLater(self.reactor, 1.0, lambda: None)
        if self.gateway is not None:
            yield self.bus.subscribe(WEB, self._web_event)
        yield self.router.join()
        if self.desk is not None:
            self.desk.start()
        log.info("libchat cluster node {node} serving (Redis {address})", node=self.node_id,
                 address=str(self.conns.address))

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """After the router released its dialogs: the desk's lease, the
        node's, the connections."""
        if self.desk is not None:
            yield self.desk.stop()
        yield self.bus.stop()
        yield self.lease.stop(release=True)
        yield self.conns.disconnect()

    def _lost(self) -> None:
        if self.router is not None:
            self.router.lease_lost()

    def _healthy(self) -> None:
        if self.router is not None:
            self.router.lease_healthy()

    # -- what /healthz and /metrics show -------------------------------------------------

    def health(self) -> dict[str, Any]:
        status = self.router.status() if self.router is not None else {}
        desk = self.desk.desk_node if self.desk is not None else None
        return {**status, "redis_durable": self.durable, "inbox_reads": self.bus.reads,
                "operator_desk": desk}

    def collector(self) -> "NodeFigures":
        return NodeFigures(self)


class NodeFigures:
    """The node's figures on ``/metrics``, read at scrape time."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        node, router = self.node, self.node.router
        age = node.lease.age
        yield GaugeMetricFamily("libchat_cluster_lease_age_seconds",
                                "Seconds since the node last refreshed its lease.",
                                value=-1 if age is None else age)
        yield GaugeMetricFamily("libchat_cluster_serving",
                                "1 while the node holds its lease and acknowledges.",
                                value=1 if router is not None and router.ready else 0)
        yield GaugeMetricFamily("libchat_cluster_owned_dialogs", "Dialogs this node owns.",
                                value=len(node.store.owned()))
        yield GaugeMetricFamily("libchat_cluster_live_nodes", "Nodes holding a lease.",
                                value=len(router.live) if router is not None else 0)
        yield CounterMetricFamily("libchat_cluster_forwarded",
                                  "Events sent to the node owning their dialog.",
                                  value=router.forwarded if router is not None else 0)
        yield CounterMetricFamily("libchat_cluster_adopted",
                                  "Dialogs adopted from nodes whose lease was gone.",
                                  value=router.adopted if router is not None else 0)
        yield GaugeMetricFamily("libchat_cluster_inbox_reads",
                                "Blocking inbox reads made (grows while the reader is alive).",
                                value=node.bus.reads)
        if router is not None:
            lag = HistogramMetricFamily("libchat_cluster_inbox_lag_seconds",
                                        "From another node's send of a forwarded event to "
                                        "its read from this node's inbox.")
            lag.add_metric([], router.inbox_lag.cumulative(), sum_value=router.inbox_lag.total)
            yield lag
        h = node.conns.round_trips
        rtt = HistogramMetricFamily("libchat_cluster_redis_seconds",
                                    "Round trip of answered Redis commands.")
        rtt.add_metric([], h.cumulative(), sum_value=h.total)
        yield rtt
