"""The seams of libchat. Doors, the core, runtimes and storage know each other
only through these.

    doors (IUpstream) --IRouter--> core --IRuntime/IInstance--> runtimes
                                    |  <--IInstanceOwner--
                                    +--IStore--> storage

Front doors implement :class:`IUpstream` and call an :class:`IRouter`; program
runtimes implement :class:`IRuntime`/:class:`IInstance` (a local Node process,
an HTTP conversation with a hosted agent, a connected remote client, a human
operator: the router does not learn the difference); the dialog/memory store
implements :class:`IStore`. Each has a verified in-memory fake in
:mod:`libchat.testing`, and a contract test mixin in ``tests/contracts/`` runs
against the fake and the real implementation alike.
"""

from __future__ import annotations

from typing import Any

import attrs
from zope.interface import Attribute, Interface


# -- values that cross the seams --------------------------------------------------


@attrs.frozen
class TokenInfo:
    """Whom a memory API token speaks for."""

    dialog_id: str
    user_id: str
    program: str


@attrs.frozen
class Receipt:
    """The router's answer to one upstream event.

    ``error`` is a 2004 body to answer on the same connection (nothing was
    recorded); otherwise ``seq`` is the transcript seq the event was recorded
    under (None for a 1002 of an unknown dialog, which records nothing)."""

    seq: int | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class DialogInfo:
    """What a door may know about a dialog (never the live objects)."""

    dialog_id: str
    user_id: str
    channel: str
    program: str | None
    intent: str | None
    state: str
    seq: int  # the seq of the newest transcript entry (0: none yet)


# -- front doors --------------------------------------------------------------------


class IUpstream(Interface):
    """One connection (or gateway) that sends user events and receives replies."""

    channel = Attribute(
        "str: the family of front doors this upstream belongs to ('frame', 'web', "
        "later 'wecom', 'lark'). A dialog's replies fall back only to upstreams "
        "of its own channel, and a dialog never changes channel."
    )

    # optional: ``fallback`` (str or None), the program a new turn starts with
    # when no rule matches, instead of a 2003 (a platform app's, section 10)

    def alive() -> bool:
        """True while events delivered now will reach a client. An upstream
        that applies backpressure answers False while it is full and calls
        :meth:`IRouter.drain` once it can take more."""

    def deliver(event: dict[str, Any]) -> None:
        """Send one libchat -> upstream event (2001-2004)."""


class IRouter(Interface):
    """What every front door calls. Doors never touch dialogs, bindings or
    transcripts directly."""

    def attach(upstream: IUpstream) -> None:
        """A front door connected; it is handed what waited for its channel."""

    def detach(upstream: IUpstream) -> None:
        """A front door went away; replies now fall back to others."""

    def drain(upstream: IUpstream) -> None:
        """The upstream can take events again (after answering not alive):
        hand it what waited for its channel, and resume paused runtimes once
        the backlog is low."""

    def receive(upstream: IUpstream, event: dict[str, Any]) -> Receipt:
        """Handle one validated 1001/1002 (see :mod:`libchat.protocol.events`)."""

    def open(dialog_id: str, user_id: str, channel: str,
             intent: str | None = None) -> DialogInfo:
        """Create an empty dialog ahead of its first message (a REST session),
        optionally with a pinned intent. ``ValueError`` if the id exists."""

    def close(upstream: IUpstream, dialog_id: str, user_id: str) -> Receipt:
        """The user ends the dialog: the same as receiving its 1002."""

    def info(dialog_id: str) -> DialogInfo | None:
        """The dialog's owner, channel, program, state and newest seq."""

    def replay(dialog_id: str, after: int = 0,
               limit: int | None = None) -> list[dict[str, Any]]:
        """The events of the dialog's transcript entries with ``seq > after``,
        oldest first, exactly as first delivered; with ``limit``, at most the
        last ``limit`` of them. Empty for an unknown dialog."""

    def entries(dialog_id: str, after: int = 0,
                limit: int | None = None) -> list[dict[str, Any]]:
        """The transcript entries themselves (REST shape: no dialog/user ids),
        ``seq > after``, oldest first, at most the first ``limit``."""

    def token_info(token: str) -> TokenInfo | None:
        """Whom a memory API token speaks for; valid while its instance lives."""


class IRouterStats(Interface):
    """Read at scrape time by the metrics door; never on the per-message path
    (except the two observer lists, which must stay cheap)."""

    observers = Attribute(
        "list of callables (direction, event): called with ('in', event) for "
        "every event received from an upstream and ('out', event) for every "
        "event delivered or kept for one (counters, latencies).")
    instance_observers = Attribute(
        "list of callables (what, program, detail): ('start', program, None), "
        "('connected', program, seconds since start), ('stop', program, reason).")

    def live_dialogs() -> int:
        """Dialogs that have a foreground instance now."""

    def instances() -> list[tuple["IInstance", str, str]]:
        """(instance, role, dialog_id) of every live instance."""

    def pending_count(channel: str) -> int:
        """Replies kept for an absent upstream of ``channel``."""


# -- runtimes -----------------------------------------------------------------------


class IInstanceOwner(Interface):
    """What a runtime reports back about one instance (implemented by the
    router; the warm pool is one too, while it holds unbound instances)."""

    def instanceConnected(instance: "IInstance") -> None:
        """The instance is ready; events sent before it were handed over."""

    def instanceEvent(instance: "IInstance", event: dict[str, Any]) -> None:
        """The instance sent a valid 2001/2002/2003."""

    def instanceGone(instance: "IInstance", connected: bool, detail: str) -> None:
        """The instance is gone for good. ``connected`` tells whether it ever
        became ready (False: it failed to start, or missed its deadline), which
        the router turns into 2002 ``program_exited`` or ``program_failed``."""


class IInstance(Interface):
    """One instance of a program, bound to at most one dialog. It may be a
    local process (``pid`` set) or have none (``pid`` None): an HTTP
    conversation, a connected remote client, a human operator."""

    instance_id = Attribute("str: unique for the life of the server")
    program = Attribute("str: the program (intent) name")
    token = Attribute("str: the secret the instance presents to the memory API")
    pid = Attribute("int | None: the local process id, if it has a process")

    def send(event: dict[str, Any]) -> None:
        """Hand an event (1001, 1002) to the instance, in order; buffered
        until it is ready. Never raises for a gone instance (dropped)."""

    def stop(drain: float = 0.0) -> Any:
        """Stop the instance: give it up to ``drain`` s to finish by itself,
        then end it (a process: SIGTERM its group, SIGKILL after the grace).
        Returns a Deferred that fires once it is gone (after instanceGone)."""


class IRuntime(Interface):
    """Starts instances of programs. Flow control is explicit: while paused,
    a runtime delivers no instance events to owners (a process runtime stops
    reading its sockets, so programs block; others buffer, bounded)."""

    def counts(program: str) -> bool:
        """Whether an instance of ``program`` counts against
        ``--max-programs`` (local processes do; remote runtimes do not)."""

    def start(program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> IInstance:
        """Start an instance of ``program`` for a dialog; events go to ``owner``.
        May raise :class:`NoRoom` when the runtime cannot take one more now."""

    def pauseEvents() -> None:
        """Stop delivering instance events until :meth:`resumeEvents`."""

    def resumeEvents() -> None:
        """Deliver instance events again."""

    def stopAll() -> Any:
        """Stop every instance; a Deferred that fires when all are gone."""


class IResumingRuntime(IRuntime):
    """A runtime whose instances outlive the server (human operators: the
    queue and the assignments are journaled). At start the router asks it to
    resume each dialog that was bound when the previous run ended, instead of
    telling the user 2002 ``program_exited``."""

    def resume(program: str, dialog_id: str, user_id: str,
               owner: IInstanceOwner) -> IInstance | None:
        """The instance that carries on the dialog, or None (not kept: the
        router ends the dialog's turn as usual)."""

    def resumed() -> None:
        """Every dialog has been offered: forget what was kept for others."""


class Unavailable(Exception):
    """Shared storage (Redis, with ``--redis``) did not confirm a write or a
    read in time: the memory API answers 503 and front doors 2004
    ``INTERNAL_ERROR``, never a false success (CONTRACT §14)."""


class NoRoom(Exception):
    """A runtime cannot start one more instance now (the router answers 2004
    ``BUSY``; nothing is recorded)."""


# -- human operators ------------------------------------------------------------------


class IOperatorSink(Interface):
    """One open operator connection (a WebSocket)."""

    def send_event(event: dict[str, Any]) -> None:
        """Send one event (3100-3105, 1001, 1002, 2001) to the operator."""


class IOperatorDesk(Interface):
    """What the web door calls for operators (docs/operators.md); the
    operators runtime implements it."""

    def operator_connected(operator_id: str, sink: IOperatorSink) -> None:
        """An operator's socket opened: it gets 3100 and a 3101 per dialog held."""

    def operator_gone(operator_id: str, sink: IOperatorSink) -> None:
        """That socket closed; 30 s without any socket loses the dialogs."""

    def operator_event(operator_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """A 3102 or 3103 (decoded, not yet validated); a 2004 body to answer
        on the socket, or None when accepted."""

    def assigned_to(dialog_id: str) -> str | None:
        """The operator who holds the dialog now, if any (1003 replays)."""


# -- storage ------------------------------------------------------------------------


class IStore(Interface):
    """Dialog records and per-(user, program) memory, durable somewhere."""

    def load() -> list[Any]:
        """Read what a previous run kept; returns the list of DialogRecords."""

    def get(dialog_id: str) -> Any:
        """The DialogRecord for an id, or None."""

    def add(record: Any) -> None:
        """Keep a new DialogRecord."""

    def changed(record: Any) -> None:
        """Mark a record as changed so the next flush writes it."""

    def memory_get(user_id: str, program: str, key: str) -> Any:
        """The value saved for (user, program, key), or None."""

    def memory_set(user_id: str, program: str, key: str, value: Any,
                   dialog_id: str, now: float) -> Any:
        """Save a value (and note it in the dialog's record); returns a
        Deferred that fires when the value is durable."""

    def conversation_get(dialog_id: str, program: str) -> str | None:
        """The hosted agent's conversation id kept for (dialog, program), or None."""

    def conversation_set(dialog_id: str, program: str, conversation_id: str | None) -> None:
        """Keep (or with None forget) it in the dialog's record (journaled
        like any record change; a dialog without a record keeps nothing)."""

    def flush() -> Any:
        """Write every changed record; returns a Deferred."""

    def pending() -> dict[str, list[dict[str, Any]]]:
        """{channel: [event, ...]}: replies kept for an absent upstream by a
        previous run, oldest first (restored by the router at start)."""

    def pending_put(channel: str, event: dict[str, Any]) -> None:
        """A reply was queued for ``channel`` because no upstream could take it."""

    def pending_taken(channel: str, count: int) -> None:
        """The ``count`` oldest queued replies of ``channel`` were delivered."""
