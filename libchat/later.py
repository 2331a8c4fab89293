"""One step after a value that may be a Deferred.

On one node the router answers synchronously (the hot path stays free of
Deferreds); a cluster node answers with Deferreds (docs/scaleout.md). Doors
chain their next step with :func:`then` and serve both.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred


def then(result: Any, step: Callable[[Any], Any]) -> Any:
    """``step(result)`` now, or once the Deferred ``result`` fires."""
    if isinstance(result, Deferred):
        return result.addCallback(step)
    return step(result)
