"""``GET /metrics``: Prometheus metrics of the whole server.

Counters and histograms are fed by the router's observer hooks; gauges are read
at scrape time (:class:`~libchat.interfaces.IRouterStats`, the sockets, the
long-polls), so they can never drift. Each server has
its own :class:`CollectorRegistry` (no process-global state: tests run many).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric)

from libchat.protocol import codes
from libchat.interfaces import IRouterStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CHANNELS = ("frame", "web")


class _LiveGauges:
    """A custom collector: reads the router, the sockets and the long-polls."""

    def __init__(self, router: IRouterStats, connections: Callable[[], int],
                 users: Callable[[], int], waiting: Callable[[], int]) -> None:
        self.router = router
        self.connections = connections
        self.users = users
        self.waiting = waiting

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("libchat_dialogs_live",
                                "Dialogs whose foreground a program holds now.",
                                value=self.router.live_dialogs())
        roles = {"foreground": 0, "background": 0, "stopping": 0}
        for _, role, _ in self.router.instances():
            roles[role] = roles.get(role, 0) + 1
        instances = GaugeMetricFamily("libchat_instances_live",
                                      "Live program instances by role.", labels=["role"])
        for role, n in sorted(roles.items()):
            instances.add_metric([role], n)
        yield instances
        yield GaugeMetricFamily("libchat_websocket_connections",
                                "Open WebSocket connections.", value=self.connections())
        yield GaugeMetricFamily("libchat_websocket_users",
                                "Users with at least one open WebSocket.", value=self.users())
        pending = GaugeMetricFamily(
            "libchat_pending_events",
            "Events kept for an absent upstream, by channel (queue depth).",
            labels=["channel"])
        for channel in CHANNELS:
            pending.add_metric([channel], self.router.pending_count(channel))
        yield pending
        yield GaugeMetricFamily("libchat_longpolls_waiting",
                                "REST long-polls waiting for a dialog entry.",
                                value=self.waiting())


class _AgentFigures:
    """Hosted agent programs' figures (libchat.runtimes.agents.stats), read
    at scrape time: ``agents.programs`` maps a program to its numbers."""

    def __init__(self, agents: Any) -> None:
        self.agents = agents

    def collect(self) -> Iterable[Metric]:
        programs = sorted(self.agents.programs.items())
        turns = CounterMetricFamily("libchat_agent_turns", "Agent turns finished.",
                                    labels=["program", "outcome"])
        failures = CounterMetricFamily("libchat_agent_failures",
                                       "Agent turns failed, by reason.",
                                       labels=["program", "reason"])
        retries = CounterMetricFamily("libchat_agent_retries",
                                      "Agent requests retried (429/5xx).", labels=["program"])
        flying = GaugeMetricFamily("libchat_agent_in_flight",
                                   "Agent turns in flight now.", labels=["program"])
        latency = HistogramMetricFamily("libchat_agent_turn_seconds",
                                        "Seconds from a turn's start to its answer.",
                                        labels=["program"])
        first = HistogramMetricFamily("libchat_agent_first_byte_seconds",
                                      "Seconds from a turn's start to the agent's first event.",
                                      labels=["program"])
        for name, s in programs:
            turns.add_metric([name, "answered"], s.answered)
            turns.add_metric([name, "failed"], s.turns - s.answered)
            for reason, n in sorted(s.failures.items()):
                failures.add_metric([name, reason], n)
            retries.add_metric([name], s.retries)
            flying.add_metric([name], s.in_flight)
            latency.add_metric([name], s.latency.cumulative(), s.latency.total)
            first.add_metric([name], s.first_byte.cumulative(), s.first_byte.total)
        yield from (turns, failures, retries, flying, latency, first)


class Metrics:
    def __init__(self, router: IRouterStats, now: Callable[[], float], *,
                 connections: Callable[[], int], users: Callable[[], int],
                 waiting: Callable[[], int], agents: Any = None,
                 collectors: tuple[Any, ...] = ()) -> None:
        self.now = now
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("libchat_events", "Events in from upstreams and out to them.",
                              ["direction", "event_type"], registry=r)
        self.starts = Counter("libchat_instance_starts", "Program instances started.",
                              ["program"], registry=r)
        self.stops = Counter("libchat_instance_stops", "Program instances gone, by reason.",
                             ["program", "reason"], registry=r)
        self.spawn = Histogram("libchat_spawn_seconds",
                               "Seconds from starting an instance to its socket connection.",
                               ["program"], buckets=LATENCY_BUCKETS, registry=r)
        self.reply = Histogram("libchat_reply_seconds",
                               "Seconds from a user message to the first reply of its dialog.",
                               buckets=LATENCY_BUCKETS, registry=r)
        r.register(_LiveGauges(router, connections, users, waiting))
        if agents is not None:
            r.register(_AgentFigures(agents))
        for collector in collectors:  # other doors' figures (platforms, post office), read at scrape time
            r.register(collector)
        self._asked: dict[str, float] = {}  # dialog_id -> when its 1001 came in
        # labels() costs ~7 us a call: on the per-message path, keep the children
        self._event_counters: dict[tuple[str, Any], Any] = {}
        router.observers.append(self.observe_event)
        router.instance_observers.append(self.observe_instance)

    def observe_event(self, direction: str, event: dict[str, Any]) -> None:
        etype = event.get("event_type")
        counter = self._event_counters.get((direction, etype))
        if counter is None:
            counter = self._event_counters[(direction, etype)] = self.events.labels(
                direction, str(etype))
        counter.inc()
        dialog_id = event.get("dialog_id")
        if not isinstance(dialog_id, str):
            return
        if direction == "in" and etype == codes.USER_MESSAGE:
            self._asked.setdefault(dialog_id, self.now())
        elif direction == "out" and etype in (codes.REPLY, codes.ENDED, codes.UNSUPPORTED):
            asked = self._asked.pop(dialog_id, None)
            if asked is not None and etype == codes.REPLY and not event.get("background"):
                self.reply.observe(self.now() - asked)

    def observe_instance(self, what: str, program: str, detail: Any) -> None:
        if what == "start":
            self.starts.labels(program).inc()
        elif what == "connected":
            self.spawn.labels(program).observe(float(detail))
        elif what == "stop":
            self.stops.labels(program, str(detail)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
