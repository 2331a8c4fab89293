"""JSON encode/decode: orjson when installed (5-20x faster), stdlib otherwise."""

from __future__ import annotations

import json
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    import orjson

    _orjson: Any = orjson

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover
    _orjson = None

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    JSONDecodeError = ValueError


def _dumps_pretty_stdlib(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


def dumps_pretty(obj: Any) -> bytes:
    """Human-readable JSON for files operators open.

    orjson (indented, sorted keys) is ~20x faster than stdlib ``json`` here,
    which matters: dialog files are serialised in the store's flush thread,
    and a slow encoder holds the GIL the reactor thread needs (bench/).
    Values orjson refuses (e.g. integers over 64 bits) fall back to stdlib.
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, option=_orjson.OPT_INDENT_2 | _orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return _dumps_pretty_stdlib(obj)
