"""An operators program's settings, from its ``package.json`` (docs/operators.md)."""

from __future__ import annotations

from typing import Any

import attrs

DEFAULT_MAX_PER_OPERATOR = 5
DEFAULT_WAIT = 300.0


@attrs.frozen
class DeskSettings:
    max_per_operator: int = DEFAULT_MAX_PER_OPERATOR
    wait: float = DEFAULT_WAIT  # seconds in the queue before a 2003


def read(section: dict[str, Any]) -> DeskSettings | str:
    """The settings of a program's libchat section, or why they are refused."""
    most = section.get("max_per_operator", DEFAULT_MAX_PER_OPERATOR)
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        return "\"max_per_operator\" must be an integer >= 1"
    wait = section.get("wait", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait <= 0:
        return "\"wait\" must be a number of seconds > 0"
    return DeskSettings(most, float(wait))
