"""The platform adapters' figures on ``/metrics``, read at scrape time.

Labels are the platform and the configured app name (the operator's own
words), never a user id, a token or a body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric


class PlatformFigures:
    def __init__(self, door: Any) -> None:
        self.door = door

    def collect(self) -> Iterable[Metric]:
        labels = ["platform", "app"]
        callbacks = CounterMetricFamily("libchat_platform_callbacks",
                                        "Platform callbacks answered, by HTTP status.",
                                        labels=[*labels, "status"])
        latency = HistogramMetricFamily("libchat_platform_callback_seconds",
                                        "Seconds from a callback request to its answer.",
                                        labels=labels)
        sent = CounterMetricFamily("libchat_platform_sends",
                                   "Platform API calls accepted (messages and uploads).",
                                   labels=labels)
        retries = CounterMetricFamily("libchat_platform_send_retries",
                                      "Platform sends retried after a transient failure.",
                                      labels=labels)
        failures = CounterMetricFamily("libchat_platform_send_failures",
                                       "Replies given up: refused for good or failing for "
                                       "10 minutes.", labels=labels)
        dedupe = CounterMetricFamily("libchat_platform_dedupe_hits",
                                     "Platform retries of callbacks already taken.",
                                     labels=labels)
        outbox = GaugeMetricFamily("libchat_platform_outbox",
                                   "Reply items waiting to be sent.", labels=labels)
        waiting: dict[tuple[str, str], int] = {}
        for item in self.door.outbox.items.values():
            key = (item["platform"], item["app"])
            waiting[key] = waiting.get(key, 0) + 1
        for (platform, name), sender in sorted(self.door.senders.items()):
            stats, ls = sender.stats, [platform, name]
            for status, n in sorted(stats.callbacks.items()):
                callbacks.add_metric([*ls, status], n)
            latency.add_metric(ls, stats.callback_seconds.cumulative(),
                               stats.callback_seconds.total)
            sent.add_metric(ls, stats.sent)
            retries.add_metric(ls, stats.retries)
            failures.add_metric(ls, stats.failures)
            dedupe.add_metric(ls, self.door.callbacks.dedupe_hits(f"{platform}:{name}"))
            outbox.add_metric(ls, waiting.get((platform, name), 0))
        yield from (callbacks, latency, sent, retries, failures, dedupe, outbox)
        unsaved = getattr(self.door.outbox, "unsaved", None)  # --redis only
        if unsaved is not None:
            yield GaugeMetricFamily("libchat_platform_outbox_unsaved",
                                    "Outbox changes Redis has not acknowledged yet (kept in "
                                    "memory, written again every second).", value=unsaved)
