"""``GET /metrics``: Prometheus metrics of the whole server.

The router's observer hooks feed plain integers and
:class:`~libchat.histogram.Histogram` s (no prometheus ``inc()`` under a lock
on the per-message path, issue 14); :class:`_Flow` turns them into metric
families at scrape time. Gauges are read at scrape time too
(:class:`~libchat.interfaces.IRouterStats`, the sockets, the long-polls), so
they can never drift. Each server has its own :class:`CollectorRegistry` (no
process-global state: tests run many).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from collections import defaultdict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric)

from libchat.histogram import Histogram
from libchat.protocol import codes
from libchat.interfaces import IRouterStats

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


class _Flow:
    """The counters and histograms the observers keep, as metric families."""

    def __init__(self, metrics: "Metrics") -> None:
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.m
        events = CounterMetricFamily("libchat_events", "Events in from upstreams and out to them.",
                                     labels=["direction", "event_type"])
        for (direction, etype), n in sorted(m.events.items(), key=str):
            events.add_metric([direction, str(etype)], n)
        starts = CounterMetricFamily("libchat_instance_starts", "Program instances started.",
                                     labels=["program"])
        for program, n in sorted(m.starts.items()):
            starts.add_metric([program], n)
        stops = CounterMetricFamily("libchat_instance_stops", "Program instances gone, by reason.",
                                    labels=["program", "reason"])
        for (program, reason), n in sorted(m.stops.items()):
            stops.add_metric([program, reason], n)
        spawn = HistogramMetricFamily(
            "libchat_spawn_seconds", "Seconds from starting an instance to its socket connection.",
            labels=["program"])
        for program, h in sorted(m.spawn.items()):
            spawn.add_metric([program], h.cumulative(), h.total)
        reply = HistogramMetricFamily(
            "libchat_reply_seconds", "Seconds from a user message to the first reply of its dialog.",
            buckets=m.reply.cumulative(), sum_value=m.reply.total)
        yield from (events, starts, stops, spawn, reply)


class Metrics:
    def __init__(self, router: IRouterStats, now: Callable[[], float], *,
                 connections: Callable[[], int], users: Callable[[], int],
                 waiting: Callable[[], int], agents: Any = None,
                 collectors: tuple[Any, ...] = ()) -> None:
        self.now = now
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # plain figures, read by _Flow at scrape time
        self.events: defaultdict[tuple[str, Any], int] = defaultdict(int)
        self.starts: defaultdict[str, int] = defaultdict(int)
        self.stops: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.spawn: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.reply = Histogram()
        r.register(_Flow(self))
        r.register(_LiveGauges(router, connections, users, waiting))
        if agents is not None:
            r.register(_AgentFigures(agents))
        for collector in collectors:  # other doors' figures (platforms, post office), read at scrape time
            r.register(collector)
        self._asked: dict[str, float] = {}  # dialog_id -> when its 1001 came in
        router.observers.append(self.observe_event)
        router.instance_observers.append(self.observe_instance)

    def observe_event(self, direction: str, event: dict[str, Any]) -> None:
        etype = event.get("event_type")
        self.events[direction, etype] += 1
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
            self.starts[program] += 1
        elif what == "connected":
            self.spawn[program].observe(float(detail))
        elif what == "stop":
            self.stops[program, str(detail)] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
