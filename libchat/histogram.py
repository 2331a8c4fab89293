"""A latency histogram as plain numbers, read at scrape time.

Process-less runtimes and doors (agents, platforms) keep their figures
without a metrics library on the hot path; ``/metrics`` turns them into
Prometheus histograms (libchat.doors.web.metrics, libchat.doors.platforms.figures).
"""

from __future__ import annotations

import bisect

import attrs

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


# round trips to a local service (Redis): tenths of a millisecond matter
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)


@attrs.define
class Histogram:
    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = attrs.Factory(lambda self: [0] * (len(self.buckets) + 1),
                                      takes_self=True)
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts):
            running += n
            out.append((bound, running))
        return out
