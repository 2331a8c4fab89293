"""``twistd --logger libchat.logs.json_observer``: one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import Logger, LogLevel

from libchat.logs import to_json_line
from libchat.doors.web.client import connect_ws

from .conftest import BUNDLED, Server


def test_an_event_becomes_one_line_with_its_fields() -> None:
    events: list[dict[str, Any]] = []
    log = Logger(namespace="libchat.test", observer=events.append)
    log.info("dialog {dialog_id} bound to {program}\nsecond line", dialog_id="d1",
             program="hello", obj=object())
    line = to_json_line(events[0])
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "dialog d1 bound to hello\nsecond line"
    assert (data["dialog_id"], data["program"], data["level"]) == ("d1", "hello", "info")
    assert data["namespace"] == "libchat.test" and data["time"].endswith("Z")
    assert "obj" not in data  # only JSON-native values become fields


def test_a_failure_carries_its_traceback() -> None:
    events: list[dict[str, Any]] = []
    log = Logger(observer=events.append)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("it broke in {dialog_id}", dialog_id="d2", level=LogLevel.critical)
    data = json.loads(to_json_line(events[0]))
    assert data["level"] == "critical" and "ZeroDivisionError" in data["failure"]


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: Any) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("data")
    server = Server(["--programs", str(BUNDLED)], data,
                             twistd_args=["--logger", "libchat.logs.json_observer"])
    try:
        yield server
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_twistd_writes_json_lines_with_dialog_and_program(logging_server: Server) -> Any:
    client = yield connect_ws(reactor, "127.0.0.1", logging_server.web, "user_id=logan")
    client.send({"event_type": 1001, "dialog_id": "log-d1",
                 "messages": {"content": "echo logged"}})
    yield client.next_event(reactor)
    yield client.close()
    logging_server.wait_for("log-d1", 10)
    logging_server.stop()
    records = [json.loads(line) for line in logging_server.lines if line.strip()]
    assert any(r["message"].startswith("libchat web listening on") for r in records)
    bound = [r for r in records if r.get("dialog_id") == "log-d1" and r.get("program")]
    assert bound and bound[0]["program"] == "echo"
