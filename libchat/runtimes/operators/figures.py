"""The desk's figures on ``/metrics``, read at scrape time (docs/operators.md).

The ``operator`` label is an operator's user id: operators are staff
accounts, few and known, so the label's cardinality stays small; users'
ids never become labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric


class DeskFigures:
    def __init__(self, desk: Any) -> None:
        self.desk = desk  # an OperatorRuntime

    def collect(self) -> Iterable[Metric]:
        desk, stats = self.desk, self.desk.stats
        yield GaugeMetricFamily("libchat_operator_queue_length",
                                "Dialogs waiting for an operator now.", value=len(desk.queue()))
        yield HistogramMetricFamily("libchat_operator_wait_seconds",
                                    "Seconds from queued to assigned to an operator.",
                                    buckets=stats.wait.cumulative(), sum_value=stats.wait.total)
        active = GaugeMetricFamily("libchat_operator_active_dialogs",
                                   "Dialogs held by each operator (connected or within "
                                   "their 30 s away).", labels=["operator"])
        connected = 0
        for op in sorted(desk.operators(), key=lambda o: o.operator_id):
            active.add_metric([op.operator_id], len(op.dialogs))
            connected += bool(op.sinks)
        yield active
        yield GaugeMetricFamily("libchat_operators_connected",
                                "Operators with at least one open socket.", value=connected)
        yield CounterMetricFamily("libchat_operator_abandoned",
                                  "Users who left (1002) while queued.", value=stats.abandoned)
        yield CounterMetricFamily("libchat_operator_timeouts",
                                  "Dialogs that waited longer than the program's wait (2003).",
                                  value=stats.timeouts)
        yield CounterMetricFamily("libchat_operator_assignments",
                                  "Dialogs assigned to an operator.", value=stats.assigned)
