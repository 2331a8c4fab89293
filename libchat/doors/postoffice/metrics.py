"""The hub's figures on the ``--web`` ``/metrics`` page, read at scrape time."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class HubFigures:
    """A prometheus collector over a :class:`~libchat.doors.postoffice.hub.Hub`."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield GaugeMetricFamily("libchat_postoffice_clients", "Connected post-office clients.",
                                value=len(hub.conns))
        yield GaugeMetricFamily("libchat_postoffice_queued",
                                "Messages waiting in the offline queue.", value=len(hub.queue))
        yield CounterMetricFamily("libchat_postoffice_deliveries",
                                  "Envelopes delivered to a client socket.",
                                  value=hub.stats["deliveries"])
        yield CounterMetricFamily("libchat_postoffice_bounces",
                                  "UNDELIVERABLE bounces (queue full or expired).",
                                  value=hub.stats["bounces"])
        refusals = CounterMetricFamily("libchat_postoffice_refusals",
                                       "Connections refused before the upgrade, by HTTP status.",
                                       labels=["reason"])
        for reason in ("400", "401", "403", "409", "503"):
            refusals.add_metric([reason], hub.refusals.get(reason, 0))
        yield refusals
