"""Hosted agents as programs (docs/agents.md): an :class:`AgentRuntime` per
service (``dify``, ``coze``) whose instances are HTTP conversations, not
processes.

A dialog bound to an agent program gets one :class:`AgentInstance`. Each 1001
becomes one :meth:`IAgentClient.turn`, one at a time per dialog and in order;
per program at most ``max_concurrency`` turns are in flight and the others
wait first come, first served. The wait is bounded: with 1,000 turns waiting,
a new dialog is refused at start (:class:`NoRoom`: the router answers 2004
``BUSY`` and records nothing) and a message of a bound dialog gets a 2004
``BUSY`` of its own (the dialog stays bound); so does a message of a dialog
that already has 1,000 of its own waiting. An answer is one 2001; with
``single_turn`` a 2002 ``completed`` follows. A failed turn (after two retries
with back-off when the client says it may be retried) ends the instance as
not connected with a ``detail``, which the router sends as 2002
``program_failed``. A 1002 cancels the turn in flight (the service's stop
call) and drops the waiting ones.
"""

from __future__ import annotations

import secrets
from collections import deque
from itertools import count
from pathlib import Path
from typing import Any, Callable, Mapping, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.interfaces import IInstance, IInstanceOwner, IRuntime, IStore, NoRoom
from libchat.protocol import codes
from libchat.runtimes.agents.client import AgentAnswer, AgentError, AgentTurn, IAgentClient
from libchat.runtimes.agents.settings import AgentSettings, Unavailable, agent_settings
from libchat.runtimes.agents.stats import AgentStats
from libchat.runtimes.held import HeldCalls

MAX_WAITING = 1000
RETRY_DELAYS = (1.0, 3.0)  # two retries of a retryable failure
MakeClient = Callable[[dict, str, IReactorTime], IAgentClient]
_ids = count(1)


class Full(Exception):
    """The program's wait queue is full."""


class Slots:
    """At most ``limit`` turns of one program in flight; the rest wait in order."""

    def __init__(self, limit: int, max_waiting: int = MAX_WAITING) -> None:
        self.limit, self.max_waiting = limit, max_waiting
        self.in_flight = 0
        self.waiting: deque[defer.Deferred[None]] = deque()

    def full(self) -> bool:
        return self.in_flight >= self.limit and len(self.waiting) >= self.max_waiting

    def acquire(self) -> "defer.Deferred[None]":
        if self.in_flight < self.limit and not self.waiting:
            self.in_flight += 1
            return defer.succeed(None)
        if len(self.waiting) >= self.max_waiting:
            raise Full(f"{len(self.waiting)} turns waiting")
        d: defer.Deferred[None] = defer.Deferred(lambda d: self.waiting.remove(d))
        self.waiting.append(d)
        return d

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft().callback(None)  # the slot passes on
        else:
            self.in_flight -= 1


class _Program:
    def __init__(self, settings: AgentSettings, client: IAgentClient) -> None:
        self.settings, self.client = settings, client
        self.slots = Slots(settings.max_concurrency)


@implementer(IRuntime)
class AgentRuntime(HeldCalls):
    """Starts :class:`AgentInstance` s of the programs of one service."""

    log = Logger()

    def __init__(self, name: str, clock: IReactorTime, make_client: MakeClient,
                 store: IStore, stats: AgentStats | None = None,
                 env: Mapping[str, str] | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 max_waiting: int = MAX_WAITING) -> None:
        self.name, self.clock, self.make_client, self.store = name, clock, make_client, store
        self.stats = stats if stats is not None else AgentStats(clock.seconds)
        self.env, self.retry_delays, self.max_waiting = env, retry_delays, max_waiting
        self._programs: dict[str, _Program] = {}
        self._instances: set[AgentInstance] = set()
        HeldCalls.__init__(self)

    # -- the library asks ----------------------------------------------------------

    def check(self, program: Any) -> str | None:
        """Why ``program`` cannot be served (None: it can). Reads its key;
        keeps its client while its section stays the same."""
        try:
            settings = agent_settings(self.name, program.section, Path(program.directory),
                                      self.env)
        except Unavailable as e:
            self._programs.pop(program.name, None)
            return str(e)
        known = self._programs.get(program.name)
        if known is None or known.settings != settings \
                or known.settings.section != settings.section:
            try:
                client = self.make_client(settings.section, settings.api_key, self.clock)
            except (ValueError, TypeError) as e:
                return f"bad settings: {e}"
            except ImportError as e:
                return f"the {self.name} client cannot be loaded ({e.name or e})"
            old = known
            known = _Program(settings, client)
            if old is not None:  # turns waiting keep their place
                known.slots = old.slots
                known.slots.limit = settings.max_concurrency
            self._programs[program.name] = known
        return None

    # -- IRuntime -------------------------------------------------------------------

    def counts(self, program: str) -> bool:
        return False

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> "AgentInstance":
        known = self._programs.get(program)
        if known is None:
            raise NoRoom(f"program {program} is unavailable")
        if known.slots.full():
            raise NoRoom(f"program {program} has {len(known.slots.waiting)} turns waiting")
        instance = AgentInstance(self, known, program, dialog_id, user_id, owner)
        self._instances.add(instance)
        self.clock.callLater(0, instance._connected)
        return instance

    def stopAll(self) -> "defer.Deferred[Any]":
        return defer.DeferredList([i.stop() for i in list(self._instances)],
                                  consumeErrors=True)


@implementer(IInstance)
class AgentInstance:
    """One dialog's conversation with a hosted agent."""

    log = Logger()
    pid = None

    def __init__(self, runtime: AgentRuntime, program_: _Program, program: str,
                 dialog_id: str, user_id: str, owner: IInstanceOwner) -> None:
        self.runtime, self._program = runtime, program_
        self.instance_id = f"{runtime.name}-{next(_ids)}"
        self.program, self.dialog_id, self.user_id, self.owner = (
            program, dialog_id, user_id, owner)
        self.token = secrets.token_urlsafe(24)  # never bound: the memory API refuses it
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = False
        self._busy = False
        self._closed = False  # a 1002 came: no more turns
        self._gone = False
        self._turn: defer.Deferred[Any] | None = None
        self._task: tuple[str, str | None] | None = None
        self._done: defer.Deferred[None] = defer.Deferred()

    def __repr__(self) -> str:
        return f"<AgentInstance {self.instance_id} {self.program} {self.dialog_id}>"

    def _connected(self) -> None:
        if self._gone:
            return
        self._ready = True
        self.runtime._report(lambda: self.owner.instanceConnected(self))
        self._next()

    def send(self, event: dict[str, Any]) -> None:
        if self._gone or self._closed:
            return
        if event.get("event_type") == codes.CLIENT_CLOSE:
            self._queue.clear()
            self._cancel()
            return
        if event.get("event_type") == codes.USER_MESSAGE:
            if len(self._queue) >= self.runtime.max_waiting:  # one dialog's own bound
                self._busy_for(event, f"{len(self._queue)} messages of this dialog waiting")
                return
            self._queue.append(event)
            self._next()

    def _busy_for(self, event: dict[str, Any], why: str) -> None:
        busy = codes.error(codes.BUSY, why, message_id=event.get("message_id"))
        self.runtime._report(lambda: self.owner.instanceEvent(self, busy))

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        if not self._gone:
            self._queue.clear()
            self._cancel()
            self._end(True, "stopped")
        return self._done

    # -- turns -------------------------------------------------------------------------

    def _next(self) -> None:
        if not self._ready or self._busy or self._closed or self._gone or not self._queue:
            return
        event = self._queue.popleft()
        try:
            slot = self._program.slots.acquire()
        except Full as e:
            self._busy_for(event, f"program {self.program} is busy ({e})")
            self._next()
            return
        self._busy = True
        self._turn = slot
        slot.addCallback(lambda _: self._run(event))
        slot.addErrback(self._swallow_cancel)

    def _run(self, event: dict[str, Any]) -> "defer.Deferred[Any]":
        stats = self.runtime.stats.turn(self.program, self.runtime.name)
        messages = event.get("messages") or {}
        turn = AgentTurn(
            query=str(messages.get("content", "")), user=self.user_id,
            conversation_id=self.runtime.store.conversation_get(self.dialog_id, self.program),
            attachments=tuple(a for a in messages.get("attachments") or []
                              if isinstance(a, dict)))
        d = self._attempt(turn, 0, stats)
        d.addBoth(self._finished, stats)
        return d

    def _attempt(self, turn: AgentTurn, tries: int, stats: Any) -> "defer.Deferred[Any]":
        def on_task(task_id: str, conversation_id: str | None) -> None:
            first = self._task is None
            self._task = (task_id, conversation_id)
            if first:
                stats.first_byte()

        self._task = None
        d = defer.maybeDeferred(self._program.client.turn, turn, on_task)
        self._turn = d

        def retry(f: Failure) -> Any:
            f.trap(AgentError)
            error = cast(AgentError, f.value)
            delays = self.runtime.retry_delays
            if not error.retryable or tries >= len(delays) or self._closed:
                return f
            stats.retried()
            self.log.info("{program}: turn of {dialog_id} failed ({why}); retry in {s}s",
                          program=self.program, dialog_id=self.dialog_id,
                          why=error.detail, s=delays[tries])
            wait = task.deferLater(self.runtime.clock, delays[tries],
                                   lambda: self._attempt(turn, tries + 1, stats))
            self._turn = wait
            return wait

        d.addErrback(retry)
        return d

    def _finished(self, result: Any, stats: Any) -> None:
        self._turn = None
        self._program.slots.release()
        self._busy = False
        if self._closed or self._gone:
            stats.ended("cancelled")
            return
        if isinstance(result, Failure):
            if result.check(AgentError):
                error = cast(AgentError, result.value)
                why = f"{error.reason}: {error.detail}"
                stats.ended(error.reason)
            else:
                self.log.failure("{program}: turn of {dialog_id} broke", result,
                                 program=self.program, dialog_id=self.dialog_id)
                why = f"internal: {getattr(result.type, '__name__', 'error')}"
                stats.ended("internal")
            self._queue.clear()
            self._end(False, why)
            return
        answer: AgentAnswer = result
        stats.ended(None)
        if answer.conversation_id:
            self.runtime.store.conversation_set(self.dialog_id, self.program,
                                                answer.conversation_id)
        reply = {"event_type": codes.REPLY, "dialog_id": self.dialog_id,
                 "user_id": self.user_id,
                 "messages": {"content": answer.content,
                              "attachments": [dict(a) for a in answer.attachments]}}
        self.runtime._report(lambda: self.owner.instanceEvent(self, reply))
        if self._program.settings.single_turn:
            ended = {"event_type": codes.ENDED, "dialog_id": self.dialog_id,
                     "user_id": self.user_id}
            self.runtime._report(lambda: self.owner.instanceEvent(self, ended))
            self._queue.clear()
            self._end(True, "single turn answered")
            return
        self._next()

    def _swallow_cancel(self, f: Failure) -> None:
        f.trap(defer.CancelledError)

    def _cancel(self) -> None:
        """Stop the turn in flight: tell the service, then drop the request."""
        if self._task is not None and self._busy:
            task_id, conversation_id = self._task
            d = defer.maybeDeferred(self._program.client.cancel, task_id, conversation_id,
                                    self.user_id)
            d.addErrback(lambda f: self.log.warn(
                "{program}: stopping task of {dialog_id} failed: {why}",
                program=self.program, dialog_id=self.dialog_id, why=f.getErrorMessage()))
        self._closed = True  # the cancelled turn's outcome is not an answer
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.cancel()

    def _end(self, connected: bool, detail: str) -> None:
        self._gone = True
        self.runtime._instances.discard(self)

        def gone() -> None:
            self.owner.instanceGone(self, connected, detail)
            self._done.callback(None)
        self.runtime._report(gone)
