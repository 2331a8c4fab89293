"""The operators runtime: dialogs queue for people (CONTRACT §13, docs/operators.md).

A program with ``"runtime": "operators"`` starts an :class:`OperatorInstance`
per dialog: no process, never counted against ``--max-programs``. The
instance holds a *ticket* in one desk-wide queue; :class:`OperatorRuntime`
assigns tickets first come, first served, to the connected operator with the
fewest dialogs below the program's ``max_per_operator``, and is the
:class:`~libchat.interfaces.IOperatorDesk` the web door calls for operators'
sockets. An operator's 3102 becomes the instance's 2001 (with ``"operator"``),
3103 its 2002; the router records them like any program's events.

Every change of a ticket is written to the :class:`~.book.IOperatorBook`, so
after a restart the router resumes each queued or assigned dialog
(:class:`~libchat.interfaces.IResumingRuntime`) instead of ending it.
"""

from __future__ import annotations

import secrets
from itertools import count
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.histogram import Histogram
from libchat.interfaces import (
    IInstance,
    IInstanceOwner,
    IOperatorDesk,
    IOperatorSink,
    IResumingRuntime,
    NoRoom,
)
from libchat.protocol import codes
from libchat.protocol.events import BadEvent, normalize_messages
from libchat.runtimes.held import HeldCalls

from . import settings as desk_settings
from .book import IOperatorBook

SNAPSHOT, ASSIGNED, REPLY, DONE, QUEUE, RELEASED = 3100, 3101, 3102, 3103, 3104, 3105
AWAY = 30.0  # seconds without a socket before an operator's dialogs go back
TRANSCRIPT = 50  # entries in a 3101
_ids = count(1)

Replay = Callable[[str, int, "int | None"], list[dict[str, Any]]]


@attrs.define(eq=False)
class Ticket:
    """One dialog waiting for, or held by, an operator."""

    dialog_id: str
    user_id: str
    program: str
    since: float  # when it (last) entered the queue
    rank: float  # queue order
    operator: str | None = None
    assigned_at: float | None = None
    instance: OperatorInstance | None = None
    told: int | None = None  # the place the user was last told
    timer: IDelayedCall | None = None  # the wait deadline while queued

    def state(self) -> dict[str, Any]:
        return {"dialog_id": self.dialog_id, "user_id": self.user_id,
                "program": self.program, "since": self.since, "rank": self.rank,
                "operator": self.operator, "assigned_at": self.assigned_at}

    def summary(self) -> dict[str, Any]:
        return {"dialog_id": self.dialog_id, "user_id": self.user_id,
                "program": self.program, "since": self.since}

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@attrs.define(eq=False)
class Operator:
    operator_id: str
    order: int  # ties go to who connected first
    sinks: list[IOperatorSink] = attrs.Factory(list)
    dialogs: list[str] = attrs.Factory(list)  # in assignment order
    away: IDelayedCall | None = None

    def send(self, event: dict[str, Any]) -> None:
        for sink in list(self.sinks):
            sink.send_event(event)


@attrs.define
class DeskStats:
    """Counted here, read at scrape time (libchat.runtimes.operators.figures)."""

    wait: Histogram = attrs.Factory(Histogram)
    abandoned: int = 0
    timeouts: int = 0
    assigned: int = 0


@implementer(IResumingRuntime, IOperatorDesk)
class OperatorRuntime(HeldCalls):
    log = Logger()

    def __init__(self, clock: IReactorTime, book: IOperatorBook, *, away: float = AWAY) -> None:
        HeldCalls.__init__(self)
        self.clock, self.book, self.away = clock, book, away
        self.stats = DeskStats()
        self._programs: dict[str, desk_settings.DeskSettings] = {}
        self._tickets: dict[str, Ticket] = {}
        self._operators: dict[str, Operator] = {}
        self._order = count()
        self._replay: Replay = lambda dialog_id, after, limit: []
        self._info: Callable[[str], Any] = lambda dialog_id: None
        self._lost: dict[str, Operator] = {}  # released by a stop: 3105 reason pending
        self._kept: dict[str, Ticket] = {t["dialog_id"]: self._ticket(t)
                                         for t in book.load()}

    def _ticket(self, saved: dict[str, Any]) -> Ticket:
        return Ticket(saved["dialog_id"], saved["user_id"], saved["program"],
                      float(saved["since"]), float(saved["rank"]), saved.get("operator"),
                      saved.get("assigned_at"))

    def attach(self, router: Any) -> None:
        """Read transcripts through the router and see what it delivers
        (replies into operators' dialogs go to their operator with ``seq``)."""
        self._replay = router.replay
        self._info = router.info
        router.observers.append(self._delivered)

    # -- the library asks --------------------------------------------------------

    def check(self, program: Any) -> str | None:
        found = desk_settings.read(dict(program.section or {}))
        if isinstance(found, str):
            return found
        self._programs[program.name] = found
        return None

    def settings_of(self, program: str) -> desk_settings.DeskSettings:
        return self._programs.get(program) or desk_settings.DeskSettings()

    # -- IRuntime ----------------------------------------------------------------

    def counts(self, program: str) -> bool:
        return False

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> OperatorInstance:
        if program not in self._programs:
            raise NoRoom(f"program {program} is unavailable")
        old = self._tickets.get(dialog_id)
        if old is not None and old.instance is not None:
            old.instance.stop()
        now = self.clock.seconds()
        ticket = Ticket(dialog_id, user_id, program, now, self._tail_rank())
        instance = OperatorInstance(self, ticket, owner)
        self._tickets[dialog_id] = ticket
        self._queued(ticket)
        if not self._assign_all():
            self._queue_changed()
        return instance

    def stopAll(self) -> "defer.Deferred[Any]":
        """A server stop leaves every dialog bound and its ticket in the book,
        without a 2002: the next run resumes them (docs/operators.md)."""
        self._end_all("server stopping")
        return defer.maybeDeferred(self.book.settle)

    def suspend(self) -> list[str]:
        """This node stops being a cluster's desk (it lost its lease, or the
        desk lease: libchat.cluster.desk) and the next desk takes its tickets
        over from the book: every instance ends as at a stop (its ticket
        stays in the book, nobody is told), every timer is cancelled, and the
        queue, the kept tickets and the operators are forgotten here. Returns the dialogs whose instances ended (their
        router forgets them next; ``stop`` of such an instance only tells the
        router it is gone)."""
        held = self._end_all("the desk moves", suspended=True)
        self._tickets.clear()
        self._kept.clear()
        self._operators.clear()
        self._lost.clear()
        return held

    def _end_all(self, detail: str, suspended: bool = False) -> list[str]:
        """Every instance ended keeping its ticket; every timer cancelled."""
        for op in self._operators.values():
            if op.away is not None and op.away.active():
                op.away.cancel()
            op.away = None
        held = []
        for ticket in list(self._tickets.values()):
            ticket.cancel_timer()
            if ticket.instance is not None:
                held.append(ticket.dialog_id)
                ticket.instance._suspended = suspended
                ticket.instance._end(True, detail, keep=True)
        return held

    # -- IResumingRuntime ----------------------------------------------------------

    def resume(self, program: str, dialog_id: str, user_id: str,
               owner: IInstanceOwner) -> OperatorInstance | None:
        ticket = self._kept.pop(dialog_id, None)
        if ticket is None or ticket.program != program or ticket.user_id != user_id:
            return None
        instance = OperatorInstance(self, ticket, owner)
        instance.bound = True
        self._tickets[dialog_id] = ticket
        if ticket.operator is None:
            self._arm_wait(ticket)
            ticket.told = self._place(ticket)  # told before the restart
        else:
            op = self._operator(ticket.operator)
            op.dialogs.append(dialog_id)
            if not op.sinks:
                self._arm_away(op)
            else:  # connected before the dialog was resumed (a cluster's new desk)
                self.clock.callLater(0, self._tell_resumed, ticket, instance, op)
        self.log.info("dialog {dialog_id} resumed ({state})", dialog_id=dialog_id,
                      state="queued" if ticket.operator is None else "assigned")
        return instance

    def _tell_resumed(self, ticket: Ticket, instance: OperatorInstance, op: Operator) -> None:
        if ticket.instance is instance and ticket.operator == op.operator_id:
            op.send(self._assignment(ticket))

    def resumed(self) -> None:
        for dialog_id in list(self._kept):
            self.book.drop(dialog_id)
        self._kept.clear()
        for op in self._operators.values():  # resumed in rank order: assignment order
            op.dialogs.sort(key=lambda d: self._tickets[d].assigned_at or 0.0)
        self._assign_all()

    # -- a cluster's desk takes over tickets (libchat.cluster.desk) --------------------

    def keep(self, tickets: list[dict[str, Any]]) -> None:
        """Tickets another node's desk kept: each waits for its dialog to be
        resumed here (as after a restart), with its rank and its clocks."""
        for saved in tickets:
            if saved["dialog_id"] not in self._tickets:
                self._kept[saved["dialog_id"]] = self._ticket(saved)

    def kept(self) -> list[str]:
        """Dialogs of tickets kept and not resumed yet."""
        return list(self._kept)

    def settle_kept(self) -> None:
        """Kept tickets were resumed (some may be left for later): their
        operators' dialogs in assignment order, the queue offered again."""
        for op in self._operators.values():
            op.dialogs.sort(key=lambda d: self._tickets[d].assigned_at or 0.0
                            if d in self._tickets else 0.0)
        self._assign_all()

    def forget_kept(self, dialog_id: str) -> None:
        """The dialog was recovered without its ticket (it had ended): drop it."""
        if self._kept.pop(dialog_id, None) is not None and dialog_id not in self._tickets:
            self.book.drop(dialog_id)

    # -- the queue -------------------------------------------------------------------

    def operators(self) -> list[Operator]:
        return list(self._operators.values())

    def queue(self) -> list[Ticket]:
        return sorted((t for t in self._tickets.values() if t.operator is None),
                      key=lambda t: t.rank)

    def _tail_rank(self) -> float:
        ranks = [t.rank for t in self._tickets.values()] + [t.rank for t in self._kept.values()]
        return max(ranks, default=0.0) + 1.0

    def _head_rank(self) -> float:
        ranks = [t.rank for t in self._tickets.values() if t.operator is None]
        return min(ranks, default=1.0) - 1.0

    def _place(self, ticket: Ticket) -> int:
        return sum(1 for t in self._tickets.values()
                   if t.operator is None and t.rank <= ticket.rank)

    def _queued(self, ticket: Ticket) -> None:
        ticket.operator, ticket.assigned_at = None, None
        self._arm_wait(ticket)
        self.book.put(ticket.state())

    def _arm_wait(self, ticket: Ticket) -> None:
        ticket.cancel_timer()
        left = ticket.since + self.settings_of(ticket.program).wait - self.clock.seconds()
        ticket.timer = self.clock.callLater(max(left, 0.0), self._timed_out, ticket)

    def _timed_out(self, ticket: Ticket) -> None:
        ticket.timer = None
        if ticket.operator is not None or ticket.instance is None:
            return
        self.stats.timeouts += 1
        self.log.info("dialog {dialog_id}: no operator within {wait}s", dialog_id=ticket.dialog_id,
                      wait=self.settings_of(ticket.program).wait)
        ticket.instance._decline()

    def _free(self, ticket: Ticket) -> None:
        """The ticket is over: out of the queue or off its operator."""
        ticket.cancel_timer()
        if self._tickets.get(ticket.dialog_id) is ticket:
            del self._tickets[ticket.dialog_id]
            self.book.drop(ticket.dialog_id)
        if ticket.operator is not None:
            op = self._operators.get(ticket.operator)
            if op is not None and ticket.dialog_id in op.dialogs:
                op.dialogs.remove(ticket.dialog_id)
                self._forget_if_idle(op)
        else:
            self._queue_changed()
        self._assign_all()

    # -- assignment --------------------------------------------------------------------

    def _operator(self, operator_id: str) -> Operator:
        op = self._operators.get(operator_id)
        if op is None:
            op = self._operators[operator_id] = Operator(operator_id, next(self._order))
        return op

    def _choose(self, ticket: Ticket) -> Operator | None:
        most = self.settings_of(ticket.program).max_per_operator
        ready = [op for op in self._operators.values() if op.sinks and len(op.dialogs) < most]
        return min(ready, key=lambda op: (len(op.dialogs), op.order), default=None)

    def _assign_all(self) -> bool:
        """Offer every queued ticket, oldest first, to an operator with room;
        True when one was assigned (operators have been told of the queue)."""
        changed = False
        for ticket in self.queue():
            if ticket.instance is None:
                continue  # kept from a previous run, not resumed yet
            op = self._choose(ticket)
            if op is not None:
                self._assign(ticket, op)
                changed = True
        if changed:
            self._queue_changed()
            self._tell_places()
        return changed

    def _assign(self, ticket: Ticket, op: Operator) -> None:
        now = self.clock.seconds()
        ticket.cancel_timer()
        ticket.operator, ticket.assigned_at = op.operator_id, now
        self.stats.wait.observe(max(now - ticket.since, 0.0))
        self.stats.assigned += 1
        op.dialogs.append(ticket.dialog_id)
        self.book.put(ticket.state())
        self.log.info("dialog {dialog_id} assigned to operator {operator}",
                      dialog_id=ticket.dialog_id, operator=op.operator_id)
        if ticket.instance is not None and ticket.instance.bound:
            op.send(self._assignment(ticket))
        # else: assigned inside start(), before the router made the dialog;
        # the 3101 goes out with the first message (in its transcript)

    def _assignment(self, ticket: Ticket) -> dict[str, Any]:
        info = self._info(ticket.dialog_id)
        return {"event_type": ASSIGNED, "dialog_id": ticket.dialog_id,
                "user_id": ticket.user_id, "program": ticket.program,
                "channel": info.channel if info is not None else None,
                "transcript": self._replay(ticket.dialog_id, 0, TRANSCRIPT)}

    def _tell_places(self) -> None:
        """A queued user hears again once their place has at least halved."""
        for place, ticket in enumerate(self.queue(), 1):
            if ticket.instance is not None and ticket.told is not None \
                    and place <= ticket.told // 2:
                ticket.instance._tell_place(place)

    def _queue_changed(self) -> None:
        if not self._operators:
            return
        event = {"event_type": QUEUE, "queue": [t.summary() for t in self.queue()]}
        for op in self._operators.values():
            op.send(event)

    def _requeue(self, op: Operator) -> None:
        """An operator stayed away: their dialogs go back to the queue head,
        in the order they were assigned."""
        op.away = None
        dialogs, op.dialogs = list(op.dialogs), []
        head = self._head_rank()
        for i, dialog_id in enumerate(reversed(dialogs)):
            ticket = self._tickets.get(dialog_id)
            if ticket is None:
                continue
            self.log.info("operator {operator} away for {seconds}s: dialog {dialog_id} "
                          "back to the queue", operator=op.operator_id, seconds=self.away,
                          dialog_id=dialog_id)
            ticket.since, ticket.rank = self.clock.seconds(), head - i
            self._queued(ticket)
            if ticket.instance is not None:
                ticket.instance._tell_place(self._place(ticket))
        self._forget_if_idle(op)
        self._queue_changed()
        self._assign_all()

    def _forget_if_idle(self, op: Operator) -> None:
        if not op.sinks and not op.dialogs and self._operators.get(op.operator_id) is op:
            if op.away is not None and op.away.active():
                op.away.cancel()
            del self._operators[op.operator_id]

    def _arm_away(self, op: Operator) -> None:
        if op.away is None or not op.away.active():
            op.away = self.clock.callLater(self.away, self._requeue, op)

    # -- IOperatorDesk -----------------------------------------------------------------

    def operator_connected(self, operator_id: str, sink: IOperatorSink) -> None:
        op = self._operator(operator_id)
        if op.away is not None and op.away.active():
            op.away.cancel()
        op.away = None
        op.sinks.append(sink)
        self.log.info("operator {operator} connected ({n} sockets)", operator=operator_id,
                      n=len(op.sinks))
        sink.send_event({"event_type": SNAPSHOT, "operator_id": operator_id,
                         "queue": [t.summary() for t in self.queue()],
                         "dialogs": list(op.dialogs)})
        for dialog_id in op.dialogs:
            sink.send_event(self._assignment(self._tickets[dialog_id]))
        self._assign_all()

    def operator_gone(self, operator_id: str, sink: IOperatorSink) -> None:
        op = self._operators.get(operator_id)
        if op is None or sink not in op.sinks:
            return
        op.sinks.remove(sink)
        if op.sinks:
            return
        self.log.info("operator {operator} has no socket; {n} dialogs wait {seconds}s",
                      operator=operator_id, n=len(op.dialogs), seconds=self.away)
        if op.dialogs:
            self._arm_away(op)
        else:
            self._forget_if_idle(op)

    def operator_event(self, operator_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        etype, dialog_id = event.get("event_type"), event.get("dialog_id")
        ticket = self._tickets.get(dialog_id) if isinstance(dialog_id, str) else None
        context = dialog_id if isinstance(dialog_id, str) else None
        if ticket is None or ticket.operator != operator_id or ticket.instance is None:
            return codes.error(codes.BAD_REQUEST, "dialog is not assigned to you",
                               dialog_id=context)
        if etype == REPLY:
            try:
                messages = normalize_messages(event.get("messages"), required=True)
            except BadEvent as e:
                return codes.error(codes.BAD_REQUEST, e.message, dialog_id=context)
            ticket.instance._reply(messages, operator_id)
            return None
        if etype == DONE:
            ticket.instance._done()
            return None
        return codes.error(codes.UNKNOWN_EVENT, f"event_type {etype} is not an operator's",
                           dialog_id=context)

    def assigned_to(self, dialog_id: str) -> str | None:
        ticket = self._tickets.get(dialog_id)
        return ticket.operator if ticket is not None else None

    # -- what the router delivers ----------------------------------------------------------

    def _delivered(self, direction: str, event: dict[str, Any]) -> None:
        """A router observer: replies and endings of held dialogs reach their
        operator (with ``seq``); a stop's 3105 learns its reason here."""
        if direction != "out":
            return
        dialog_id = event.get("dialog_id")
        if not isinstance(dialog_id, str) or not (self._lost or self._tickets):
            return
        lost = self._lost.get(dialog_id) if self._lost else None
        if lost is not None and event.get("event_type") == codes.ENDED:
            del self._lost[dialog_id]
            lost.send({"event_type": RELEASED, "dialog_id": dialog_id,
                       "reason": event.get("reason") or "stopped"})
            return
        ticket = self._tickets.get(dialog_id)
        if ticket is not None and ticket.operator is not None \
                and event.get("event_type") in (codes.REPLY, codes.ENDED):
            op = self._operators.get(ticket.operator)
            if op is not None:
                op.send(event)

    def _released(self, ticket: Ticket) -> None:
        """Tell the operator they lost the dialog; the router's 2002 that
        follows in the same turn gives the reason, else ``stopped``."""
        op = self._operators.get(ticket.operator or "")
        if op is None:
            return
        self._lost[ticket.dialog_id] = op

        def unexplained() -> None:
            if self._lost.get(ticket.dialog_id) is op:
                del self._lost[ticket.dialog_id]
                op.send({"event_type": RELEASED, "dialog_id": ticket.dialog_id,
                         "reason": "stopped"})
        self.clock.callLater(0, unexplained)


@implementer(IInstance)
class OperatorInstance:
    """One dialog's side of the desk."""

    pid = None
    # fields of this instance's 2001s the router keeps (a process's are not)
    reply_fields = ("operator", "status", "place")

    def __init__(self, runtime: OperatorRuntime, ticket: Ticket, owner: IInstanceOwner) -> None:
        self.runtime, self.ticket, self.owner = runtime, ticket, owner
        self.program, self.dialog_id = ticket.program, ticket.dialog_id
        self.instance_id = f"operators-{next(_ids)}"
        self.token = secrets.token_urlsafe(24)  # no process: the memory API never sees it
        ticket.instance = self
        self.bound = False  # the router has sent the first event
        self._gone = False
        self._suspended = False  # ended by OperatorRuntime.suspend (the router not told yet)
        self._done_d: defer.Deferred[None] = defer.Deferred()

    def __repr__(self) -> str:
        return f"<OperatorInstance {self.instance_id} {self.dialog_id}>"

    # -- IInstance ---------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        if self._gone:
            return
        ticket, kind = self.ticket, event.get("event_type")
        op = self.runtime._operators.get(ticket.operator or "")
        if not self.bound:  # the first message: the router has bound the dialog
            self.bound = True
            self.runtime._report(lambda: self.owner.instanceConnected(self))
            if op is not None and kind == codes.USER_MESSAGE:
                op.send(self.runtime._assignment(ticket))  # with this message
                return
        if kind == codes.USER_MESSAGE:
            if ticket.operator is None:
                if ticket.told is None:
                    self._tell_place(self.runtime._place(ticket))
            elif op is not None:
                op.send(self._recorded(event))
        elif kind == codes.CLIENT_CLOSE:
            if ticket.operator is None:
                self.runtime.stats.abandoned += 1
            elif op is not None:
                op.send({"event_type": codes.CLIENT_CLOSE, "dialog_id": self.dialog_id})
            self._end(True, "the user closed the dialog")

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        if not self._gone:
            if self.ticket.operator is not None:
                self.runtime._released(self.ticket)
            self._end(True, "stopped")
        elif self._suspended:  # the router forgets the dialog: its binding goes, nothing else
            self._suspended = False
            self.runtime._report(lambda: self.owner.instanceGone(self, True, "the desk moved"))
        return self._done_d

    # -- from the desk -----------------------------------------------------------------

    def _recorded(self, event: dict[str, Any]) -> dict[str, Any]:
        """The user's 1001 as the transcript has it (with ``seq``)."""
        last = self.runtime._replay(self.dialog_id, 0, 1)
        if last and last[-1].get("message_id") == event.get("message_id"):
            return last[-1]
        return dict(event)

    def _tell_place(self, place: int) -> None:
        self.ticket.told = place
        self._report({"event_type": codes.REPLY, "status": "queued", "place": place,
                      "messages": {"content": "All operators are busy. You are number "
                                              f"{place} in the queue.", "attachments": []}})

    def _reply(self, messages: dict[str, Any], operator_id: str) -> None:
        self._report({"event_type": codes.REPLY, "messages": messages, "operator": operator_id})

    def _done(self) -> None:
        self._report({"event_type": codes.ENDED})
        self._end(True, "the operator is done")

    def _decline(self) -> None:
        """No operator in time: 2003 with the user's last message."""
        last = next((e for e in reversed(self.runtime._replay(self.dialog_id, 0, TRANSCRIPT))
                     if e.get("event_type") == codes.USER_MESSAGE), {})
        self._report({"event_type": codes.UNSUPPORTED, "message_id": last.get("message_id"),
                      "messages": last.get("messages")})
        self._end(True, "no operator in time")

    def _report(self, event: dict[str, Any]) -> None:
        self.runtime._report(lambda: self.owner.instanceEvent(self, event))

    def _end(self, connected: bool, detail: str, keep: bool = False) -> None:
        """Gone for good; ``keep`` leaves the ticket in the book (shutdown)."""
        if self._gone:
            return
        self._gone = True
        ticket = self.ticket
        ticket.instance = None
        if keep:  # the server stops: nobody is told, the next run resumes it
            ticket.cancel_timer()
            self._done_d.callback(None)
            return
        self.runtime._free(ticket)

        def gone() -> None:
            self.owner.instanceGone(self, connected, detail)
            self._done_d.callback(None)
        self.runtime._report(gone)
