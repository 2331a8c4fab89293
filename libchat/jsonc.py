"""JSON encode/decode: orjson when installed (5-20x faster), stdlib otherwise."""

from __future__ import annotations

import json
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    import orjson

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    JSONDecodeError = ValueError


def dumps_pretty(obj: Any) -> bytes:
    """Human-readable JSON for files operators open (orjson when installed:
    the stdlib encoder with ``indent`` runs in pure Python, ~20x slower, and
    snapshots of thousands of dialogs are written with it)."""
    try:
        import orjson
    except ImportError:  # pragma: no cover
        return json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
