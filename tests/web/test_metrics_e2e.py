"""``GET /metrics`` parses with prometheus_client's parser and its numbers move."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads

from libchat.doors.web.client import connect_ws

from ..launcher import alive, wait_until
from .conftest import Server


@defer.inlineCallbacks
def scrape(server: Server) -> Any:
    """{(sample name, sorted labels): value} of one scrape."""
    response = yield treq.get(server.url("/metrics"))
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = yield response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest_twisted.inlineCallbacks
def test_metrics_parse_and_move_with_a_dialog(dev_server: Server) -> Any:
    before = yield scrape(dev_server)
    for name in ["libchat_dialogs_live", "libchat_websocket_connections",
                 "libchat_longpolls_waiting"]:
        assert (name, ()) in before
    assert ("libchat_instances_live", (("role", "foreground"),)) in before
    assert ("libchat_pending_events", (("channel", "frame"),)) in before

    echo_before = instances_of(dev_server, "echo")
    client = yield connect_ws(reactor, "127.0.0.1", dev_server.web, "user_id=mia")
    client.send({"event_type": 1001, "dialog_id": "metrics-d1",
                 "messages": {"content": "echo counted"}})
    yield client.next_event(reactor)
    echo = instances_of(dev_server, "echo") - echo_before
    assert echo, "no echo instance found among twistd's children"
    during = yield scrape(dev_server)
    assert during[("libchat_websocket_connections", ())] >= 1
    assert during[("libchat_dialogs_live", ())] >= 1
    assert during[("libchat_instances_live", (("role", "foreground"),))] >= 1
    client.send({"event_type": 1002, "dialog_id": "metrics-d1"})
    yield client.next_event(reactor)
    yield client.close()

    after = yield scrape(dev_server)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert moved("libchat_events_total", (("direction", "in"), ("event_type", "1001"))) == 1
    assert moved("libchat_events_total", (("direction", "in"), ("event_type", "1002"))) == 1
    assert moved("libchat_events_total", (("direction", "out"), ("event_type", "2001"))) == 1
    assert moved("libchat_events_total", (("direction", "out"), ("event_type", "2002"))) == 1
    assert moved("libchat_instance_starts_total", (("program", "echo"),)) == 1
    assert moved("libchat_spawn_seconds_count", (("program", "echo"),)) == 1
    assert moved("libchat_reply_seconds_count") == 1
    assert after[("libchat_reply_seconds_sum", ())] > 0
    # the instance is stopped after the 1002 and its stop counted once twistd
    # reaped it: wait for the process's death (nothing can signal it), then
    # scrape back to back, each scrape a round trip through twistd's reactor
    yield threads.deferToThread(wait_until, lambda: not any(alive(p) for p in echo),
                                15, "the echo instance exited")
    for _ in range(20):
        after = yield scrape(dev_server)
        if moved("libchat_instance_stops_total",
                 (("program", "echo"), ("reason", "client_closed"))) == 1:
            break
    else:
        raise AssertionError("the stop of echo was never counted")


def instances_of(server: Server, program: str) -> set[int]:
    """Pids of twistd's children running ``program`` (from their command line)."""
    found = set()
    for pid in server.children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"/{program}/".encode() in cmdline or f"/{program}.js".encode() in cmdline:
            found.add(pid)
    return found
