"""The seam between the agent runtime and one hosted agent's HTTP API
(docs/agents.md). :class:`~libchat.runtimes.agents.runtime.AgentRuntime`
turns each 1001 of a dialog into one :meth:`IAgentClient.turn`, one at a time
per dialog, at most ``max_concurrency`` in flight per program; the clients
(``dify.py``, ``coze.py``) speak their service's API with treq."""

from __future__ import annotations

from typing import Any, Callable

import attrs
from zope.interface import Interface

# why a turn failed (the 2002 program_failed ``detail`` starts with it; metrics label)
HTTP_ERROR = "http_error"      # a non-2xx answer that is not retried (or retries ran out)
AGENT_ERROR = "agent_error"    # an error event / failed chat inside an HTTP 200
TIMEOUT = "timeout"            # no byte for ``timeout`` seconds
PROTOCOL = "protocol"          # an answer that is not what the API documents (bad JSON, SSE line over 1 MiB)


@attrs.frozen
class AgentTurn:
    """One user message for the agent."""

    query: str
    user: str
    conversation_id: str | None          # kept per (dialog, program); None at first
    attachments: tuple[dict[str, Any], ...] = ()   # the 1001's attachments, as given


@attrs.frozen
class AgentAnswer:
    """The merged answer of one turn: one 2001."""

    content: str
    attachments: tuple[dict[str, Any], ...] = ()
    conversation_id: str | None = None   # to keep for the next turn


class AgentError(Exception):
    """A failed turn. ``retryable`` (HTTP 429/5xx before any answer byte) lets
    the runtime retry twice with back-off; ``detail`` never holds a secret."""

    def __init__(self, reason: str, detail: str, retryable: bool = False,
                 status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retryable, self.status = reason, detail, retryable, status


class IAgentClient(Interface):
    """One hosted agent program's API (built from its package.json section)."""

    def turn(turn: AgentTurn, on_task: Callable[[str, str | None], None]) -> Any:
        """Run one turn; a Deferred firing with an :class:`AgentAnswer` or
        failing with :class:`AgentError`. ``on_task(task_id, conversation_id)``
        is called as soon as the service names them (so a 1002 can cancel).
        Cancelling the Deferred aborts the HTTP request."""

    def cancel(task_id: str, conversation_id: str | None, user: str) -> Any:
        """Ask the service to stop a turn in flight (Dify stop, Coze cancel);
        a Deferred; failures are logged by the caller, never raised to users."""
