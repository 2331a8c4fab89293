"""JSON log lines for log shippers: one event per line, its fields as keys.

Use with twistd's own option::

    twistd -n --logger libchat.logs.json_observer libchat ...

Each line is a JSON object with ``time`` (ISO 8601, UTC), ``level``,
``namespace``, ``message`` (the formatted text) and every structured field of
the event whose value is JSON-native, e.g. ``dialog_id``, ``program``,
``user_id``, ``instance_id``; ``failure`` holds a traceback when there is one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import provider

SCALARS = (str, int, float, bool, type(None))


def to_json_line(event: dict[str, Any]) -> str:
    """One log event as a single line of JSON (no newline inside)."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, UTC)
        .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in out or key in ("format", "message", "isError"):
            continue
        if isinstance(value, SCALARS):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, SCALARS) for v in value):
            out[key] = list(value)
    failure = event.get("log_failure")
    if failure is not None:
        out["level"] = "error" if out["level"] in ("info", "debug") else out["level"]
        out["failure"] = failure.getTraceback()
    # ensure_ascii keeps a line one line whatever the message holds
    return json.dumps(out, ensure_ascii=False, default=repr).replace("\u2028", "\\u2028") \
        .replace("\u2029", "\\u2029")


def json_observer_to(stream: IO[str]) -> Callable[[dict[str, Any]], None]:
    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        stream.write(to_json_line(event) + "\n")
        stream.flush()
    return observe


def json_observer() -> Callable[[dict[str, Any]], None]:
    """Factory for ``twistd --logger``: JSON lines on standard output."""
    return json_observer_to(sys.stdout)
