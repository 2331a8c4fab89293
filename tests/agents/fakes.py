"""A scripted IAgentClient for the agent runtime's tests."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from zope.interface import implementer

from libchat.runtimes.agents.client import AgentAnswer, AgentTurn, IAgentClient


@implementer(IAgentClient)
class ScriptedClient:
    """Each turn waits for the test (``answer``/``fail`` by index) unless
    ``auto`` answers it at once with ``auto(turn)``."""

    def __init__(self, auto: Callable[[AgentTurn], Any] | None = None) -> None:
        self.auto = auto
        self.turns: list[tuple[AgentTurn, defer.Deferred[Any]]] = []
        self.cancels: list[tuple[str, str | None, str]] = []
        self.cancelled: list[int] = []

    def turn(self, turn: AgentTurn, on_task: Callable[[str, str | None], None]) -> Any:
        index = len(self.turns)
        d: defer.Deferred[Any] = defer.Deferred(lambda _: self.cancelled.append(index))
        self.turns.append((turn, d))
        on_task(f"task-{index}", turn.conversation_id or f"conv-{index}")
        if self.auto is not None:
            result = self.auto(turn)
            if isinstance(result, Exception):
                d.errback(result)
            else:
                d.callback(result)
        return d

    def cancel(self, task_id: str, conversation_id: str | None, user: str) -> Any:
        self.cancels.append((task_id, conversation_id, user))
        return defer.succeed(None)

    def in_flight(self) -> list[int]:
        return [i for i, (_, d) in enumerate(self.turns) if not d.called]

    def answer(self, index: int, content: str, conversation_id: str | None = "c") -> None:
        self.turns[index][1].callback(AgentAnswer(content, (), conversation_id))

    def fail(self, index: int, error: Exception) -> None:
        self.turns[index][1].errback(error)


def echo(turn: AgentTurn) -> AgentAnswer:
    return AgentAnswer(f"echo: {turn.query}", (), turn.conversation_id or "conv")
