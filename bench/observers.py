"""The metrics observers' cost per routed round trip (issue 14): the web
door's :class:`~libchat.doors.web.metrics.Metrics` sees every event in and out.

``python -m bench.observers`` prints the median of 5 rounds (each the best of
5 repeats of 20,000 round trips) in microseconds. It measures only the
observers, in-process; the whole router's CPU per round trip is
``python -m bench``'s figure.
"""

from __future__ import annotations

import statistics
import timeit
from typing import Any

from libchat.doors.web.metrics import Metrics


class _Router:
    observers: list[Any] = []
    instance_observers: list[Any] = []

    def live_dialogs(self) -> int:
        return 0

    def instances(self) -> list[Any]:
        return []

    def pending_count(self, channel: str) -> int:
        return 0


def per_round_trip(rounds: int = 5, number: int = 20_000) -> list[float]:
    metrics = Metrics(_Router(), lambda: 1.0, connections=lambda: 0, users=lambda: 0,
                      waiting=lambda: 0)
    user = {"event_type": 1001, "dialog_id": "d1", "user_id": "u1"}
    reply = {"event_type": 2001, "dialog_id": "d1", "user_id": "u1"}

    def round_trip() -> None:
        metrics.observe_event("in", user)
        metrics.observe_event("out", reply)
    return [min(timeit.repeat(round_trip, number=number, repeat=5)) / number * 1e6
            for _ in range(rounds)]


def main() -> None:
    runs = per_round_trip()
    print(f"metrics observers per round trip: median {statistics.median(runs):.2f} us "
          f"[{min(runs):.2f}-{max(runs):.2f}]")


if __name__ == "__main__":
    main()
