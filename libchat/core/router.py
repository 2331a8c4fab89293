"""The router: binds each dialog to one program instance (CONTRACT sections 2-3).

It knows upstreams, runtimes and the store only by their interfaces, takes its
clock by injection, and owns every timer that guards a dialog or an instance
(idle reaping, background lifetime), cancelling each with its owner.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any, Callable, Iterable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.events import new_message_id
from libchat.interfaces import IInstance, IInstanceOwner, IRuntime, IStore, IUpstream
from libchat.core.library import ProgramLibrary
from libchat.storage.records import CLOSED, FOREGROUND, OPEN, DialogRecord

FOREGROUND_ROLE = "foreground"
BACKGROUND_ROLE = "background"
STOPPING_ROLE = "stopping"

EMPTY = {"content": "", "attachments": []}
MAX_HANDBACK = 64


@attrs.define(eq=False)
class Dialog:
    """The live side of a dialog record: who holds it, and its idle timer."""

    record: DialogRecord
    upstream: IUpstream | None = None
    foreground: IInstance | None = None
    idle: IDelayedCall | None = None
    last_user: dict[str, Any] | None = None  # the last 1001 given to the foreground

    def cancel_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        self.idle = None


@attrs.define(eq=False)
class Binding:
    """What the router knows about one live instance."""

    instance: IInstance
    dialog: Dialog
    role: str = FOREGROUND_ROLE
    started_at: float = 0.0  # for the spawn latency metric
    stop_reason: str | None = None  # why the router stopped it (metrics)
    timer: IDelayedCall | None = None  # background lifetime limit
    # the latest user messages given to this instance, for hand-backs
    forwarded: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def remember(self, event: dict[str, Any]) -> None:
        self.forwarded[event["message_id"]] = event
        if len(self.forwarded) > MAX_HANDBACK:
            del self.forwarded[next(iter(self.forwarded))]

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@attrs.frozen
class TokenInfo:
    """Whom a memory API token speaks for."""

    dialog_id: str
    user_id: str
    program: str


def event_from_entry(record: DialogRecord, entry: dict[str, Any]) -> dict[str, Any]:
    """The upstream event for a transcript entry; replays send exactly this."""
    event = {"event_type": entry["event_type"], "dialog_id": record.dialog_id,
             "user_id": record.user_id}
    event.update((k, v) for k, v in entry.items() if k not in ("event_type", "at"))
    return event


@implementer(IInstanceOwner)
class Router:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        library: ProgramLibrary,
        runtime: IRuntime,
        store: IStore,
        *,
        idle_timeout: float = 3600.0,
        max_programs: int = 256,
        kill_grace: float = 5.0,
        background_limit: float = 3600.0,
        max_pending: int = 100_000,
        pending_high: int = 1000,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.library = library
        self.runtime = runtime
        self.store = store
        self.idle_timeout = idle_timeout
        self.max_programs = max_programs
        self.kill_grace = kill_grace
        self.background_limit = background_limit
        self.max_pending = max_pending
        self.pending_high = pending_high
        self._congested = False
        self.now = now or clock.seconds
        self._dialogs: dict[str, Dialog] = {}
        self._bindings: dict[IInstance, Binding] = {}
        self._tokens: dict[str, Binding] = {}
        self._upstreams: list[IUpstream] = []
        self._pending: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        # instance lifecycle for metrics: ("start", program, None), ("connected",
        # program, seconds since start), ("stop", program, reason)
        self.instance_observers: list[Callable[[str, str, Any], None]] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Load kept dialogs. A dialog whose program was running when the
        previous server died is reopened, and its upstream is told with a
        2002 ``program_exited`` (delivered once an upstream connects).
        Replies a previous run kept for an absent upstream are queued again."""
        records = self.store.load()
        for channel, events in self.store.pending().items():  # durable pending queue
            self._pending[channel].extend(events)
        for record in records:
            # a last entry that is a user message means a crash came between
            # binding the dialog and journaling its state: treat it the same
            last = record.messages[-1].get("event_type") if record.messages else None
            if record.state == FOREGROUND or (last == codes.USER_MESSAGE
                                              and record.program is not None
                                              and record.state == OPEN):
                dialog = self._dialog_for(record)
                record.state = OPEN
                self._emit(dialog, codes.ENDED, program=record.program,
                           reason=codes.PROGRAM_EXITED)

    def stop(self) -> "defer.Deferred[Any]":
        """Cancel every timer, stop every instance, write what changed."""
        for dialog in self._dialogs.values():
            dialog.cancel_idle()
        for binding in self._bindings.values():
            binding.cancel_timer()
        d = self.runtime.stopAll()
        d.addBoth(lambda _: self.store.flush())
        return d

    # -- upstreams ---------------------------------------------------------

    def attach(self, upstream: IUpstream) -> None:
        """A front door connected; hand it what waited for its channel."""
        self._upstreams.append(upstream)
        self.drain(upstream)

    def drain(self, upstream: IUpstream) -> None:
        """Hand an upstream what waited for its channel (at connect, and when
        it can take more again after backpressure)."""
        queue = self._pending.get(upstream.channel)
        sent = 0
        while queue and upstream.alive():
            upstream.deliver(queue.popleft())
            sent += 1
        if sent:
            self.store.pending_taken(upstream.channel, sent)
        if self._congested and self._pending_total() <= self.pending_high // 2:
            self._congested = False
            self.log.info("pending replies drained; programs may send again")
            self.runtime.resumeEvents()

    def _pending_total(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def detach(self, upstream: IUpstream) -> None:
        if upstream in self._upstreams:
            self._upstreams.remove(upstream)

    def pending_count(self, channel: str = "frame") -> int:
        return len(self._pending.get(channel, ()))

    def _deliver(self, dialog: Dialog, event: dict[str, Any]) -> None:
        up = dialog.upstream
        if up is None or not up.alive():
            up = next((u for u in reversed(self._upstreams)
                       if u.channel == dialog.record.channel and u.alive()), None)
            dialog.upstream = up
        for observe in self.observers:
            observe("out", event)
        if up is not None:
            up.deliver(event)
            return
        queue = self._pending[dialog.record.channel]
        if len(queue) >= self.max_pending:
            # the oldest is dropped only past a very large bound, and loudly
            dropped = queue.popleft()
            self.store.pending_taken(dialog.record.channel, 1)
            self.log.error("pending queue full for {channel}; dropped a {etype} of {dialog_id}",
                           channel=dialog.record.channel, etype=dropped.get("event_type"),
                           dialog_id=dropped.get("dialog_id"))
        queue.append(event)
        self.store.pending_put(dialog.record.channel, event)
        if not self._congested and self._pending_total() >= self.pending_high:
            # backpressure: stop reading program sockets until upstreams take
            # replies again; programs block on their own socket, nothing is lost
            self._congested = True
            self.log.warn("{count} replies wait for an upstream; pausing programs",
                          count=self._pending_total())
            self.runtime.pauseEvents()

    # -- dialogs -----------------------------------------------------------

    def dialog(self, dialog_id: str) -> Dialog | None:
        d = self._dialogs.get(dialog_id)
        if d is None:
            record = self.store.get(dialog_id)
            if record is not None:
                d = self._dialog_for(record)
        return d

    def _dialog_for(self, record: DialogRecord) -> Dialog:
        d = self._dialogs.get(record.dialog_id)
        if d is None:
            d = self._dialogs[record.dialog_id] = Dialog(record)
        return d

    def _emit(self, dialog: Dialog, event_type: int, *, message_id: str | None = None,
              messages: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Record a transcript entry and deliver it as an event."""
        entry: dict[str, Any] = {
            "event_type": event_type,
            "message_id": message_id or new_message_id(),
            "messages": messages if messages is not None else dict(EMPTY),
            "at": self.now(),
        }
        entry.update((k, v) for k, v in extra.items() if v is not None)
        entry = dialog.record.append(entry, self.now())
        self.store.changed(dialog.record)
        event = event_from_entry(dialog.record, entry)
        self._deliver(dialog, event)
        return event

    def receive(self, upstream: IUpstream, event: dict[str, Any]) -> dict[str, Any] | None:
        """Handle one validated upstream event (see :mod:`libchat.protocol.events`).

        Returns a 2004 to answer on the same connection, or None.
        """
        for observe in self.observers:
            observe("in", event)
        dialog_id, user_id = event["dialog_id"], event["user_id"]
        dialog = self.dialog(dialog_id)
        if dialog is not None and dialog.record.user_id != user_id:
            return codes.error(codes.BAD_REQUEST, "dialog belongs to another user",
                               dialog_id=dialog_id, message_id=event.get("message_id"))
        if dialog is not None and dialog.record.channel != upstream.channel:
            # a dialog stays with the front door family it was started on
            return codes.error(codes.BAD_REQUEST,
                               f"dialog belongs to the {dialog.record.channel} front door",
                               dialog_id=dialog_id, message_id=event.get("message_id"))
        if event["event_type"] == codes.CLIENT_CLOSE:
            self._client_close(upstream, dialog, event)
            return None
        return self._user_message(upstream, dialog, event)

    def open_dialog(self, dialog_id: str, user_id: str, channel: str,
                    intent: str | None = None) -> Dialog:
        """Create an empty dialog ahead of its first message (a REST session),
        optionally with a pinned intent."""
        if self.dialog(dialog_id) is not None:
            raise ValueError(f"dialog {dialog_id} exists")
        now = self.now()
        record = DialogRecord(dialog_id=dialog_id, user_id=user_id, created_at=now,
                              updated_at=now, channel=channel, intent=intent)
        self.store.add(record)
        return self._dialog_for(record)

    def _user_message(self, upstream: IUpstream | None, dialog: Dialog | None,
                      event: dict[str, Any], recorded: bool = False) -> dict[str, Any] | None:
        now = self.now()
        if dialog is None:
            assert upstream is not None
            record = DialogRecord(dialog_id=event["dialog_id"], user_id=event["user_id"],
                                  created_at=now, updated_at=now, channel=upstream.channel)
            self.store.add(record)
            dialog = self._dialog_for(record)
        if upstream is not None:
            dialog.upstream = upstream
        record = dialog.record
        if dialog.foreground is None:
            program = self.library.resolve(event["messages"]["content"],
                                           event.get("intent") or record.intent)
            if program is None:
                if not recorded:
                    self._record_user(dialog, event)
                record.state = OPEN
                self._emit(dialog, codes.UNSUPPORTED, message_id=event["message_id"],
                           messages=event["messages"])
                return None
            if len(self._bindings) >= self.max_programs:
                busy = codes.error(codes.BUSY, f"program limit of {self.max_programs} reached",
                                   dialog_id=record.dialog_id, message_id=event["message_id"])
                if recorded:  # a hand-back has no connection to answer on
                    self._deliver(dialog, busy)
                return busy
            instance = self.runtime.start(program.name, record.dialog_id, record.user_id, self)
            binding = Binding(instance, dialog, started_at=self.now())
            self._observe_instance("start", program.name, None)
            self._bindings[instance] = binding
            self._tokens[instance.token] = binding
            dialog.foreground = instance
            record.program = program.name
            record.state = FOREGROUND
            self.log.info("dialog {dialog_id} bound to {program} ({instance_id})",
                          dialog_id=record.dialog_id, program=program.name,
                          instance_id=instance.instance_id)
        if not recorded:
            self._record_user(dialog, event)
        dialog.last_user = event
        self._arm_idle(dialog)
        forward = {k: v for k, v in event.items() if k != "intent"}
        self._bindings[dialog.foreground].remember(forward)
        dialog.foreground.send(forward)
        return None

    def _record_user(self, dialog: Dialog, event: dict[str, Any]) -> None:
        dialog.record.append({"event_type": codes.USER_MESSAGE, "message_id": event["message_id"],
                              "messages": event["messages"], "at": self.now()}, self.now())
        self.store.changed(dialog.record)

    def _client_close(self, upstream: IUpstream, dialog: Dialog | None,
                      event: dict[str, Any]) -> None:
        if dialog is None:  # nothing ran: still answer, keep no record
            upstream.deliver({"event_type": codes.ENDED, "dialog_id": event["dialog_id"],
                              "user_id": event["user_id"], "reason": codes.CLIENT_CLOSED})
            return
        dialog.upstream = upstream
        dialog.cancel_idle()
        fg = dialog.foreground
        dialog.foreground = None
        if fg is not None:
            fg.send(event)
        for binding in [b for b in self._bindings.values() if b.dialog is dialog]:
            # the foreground gets time to run its close hook; all are gone
            # within the kill grace
            self._stop(binding, drain=self.kill_grace / 2 if binding.instance is fg else 0.0,
                       reason=codes.CLIENT_CLOSED)
        dialog.record.state = CLOSED
        self._emit(dialog, codes.ENDED, program=dialog.record.program,
                   reason=codes.CLIENT_CLOSED)

    def _arm_idle(self, dialog: Dialog) -> None:
        if dialog.idle is not None and dialog.idle.active():
            dialog.idle.reset(self.idle_timeout)
        else:
            dialog.idle = self.clock.callLater(self.idle_timeout, self._idle_expired, dialog)

    def _idle_expired(self, dialog: Dialog) -> None:
        dialog.idle = None
        fg = dialog.foreground
        if fg is None:
            return
        self.log.info("dialog {dialog_id} idle for {seconds}s; stopping {program}",
                      dialog_id=dialog.record.dialog_id, seconds=self.idle_timeout,
                      program=fg.program)
        self._release(dialog)
        self._stop(self._bindings[fg], reason=codes.IDLE_TIMEOUT)
        self._emit(dialog, codes.ENDED, program=fg.program, reason=codes.IDLE_TIMEOUT)

    def _release(self, dialog: Dialog) -> None:
        """The foreground is free again (the expert has the microphone)."""
        dialog.foreground = None
        dialog.cancel_idle()
        dialog.record.state = OPEN
        self.store.changed(dialog.record)

    def _stop(self, binding: Binding, drain: float = 0.0, reason: str = "stopped") -> None:
        binding.role = STOPPING_ROLE
        binding.stop_reason = binding.stop_reason or reason
        binding.cancel_timer()
        binding.instance.stop(drain)

    # -- instances (IInstanceOwner) ----------------------------------------

    def instanceConnected(self, instance: IInstance) -> None:
        self.log.debug("instance {instance_id} connected", instance_id=instance.instance_id)
        binding = self._bindings.get(instance)
        if binding is not None:
            self._observe_instance("connected", instance.program,
                                   self.now() - binding.started_at)

    def _observe_instance(self, what: str, program: str, detail: Any) -> None:
        for observe in self.instance_observers:
            observe(what, program, detail)

    def instanceEvent(self, instance: IInstance, event: dict[str, Any]) -> None:
        binding = self._bindings.get(instance)
        if (binding is not None and event["event_type"] == codes.UNSUPPORTED
                and event.get("handback") is True):
            self._hand_back(binding, event)
            return
        if binding is None or binding.role == STOPPING_ROLE:
            self.log.info("ignoring a {etype} from stopping instance {instance_id}",
                          etype=event.get("event_type"), instance_id=instance.instance_id)
            return
        dialog = binding.dialog
        etype = event["event_type"]
        background = binding.role == BACKGROUND_ROLE
        if etype == codes.REPLY:
            self._emit(dialog, codes.REPLY, message_id=event.get("message_id"),
                       messages=event["messages"], program=instance.program,
                       background=True if background else None)
        elif background:
            self.log.info("ignoring a {etype} from background instance {instance_id}",
                          etype=etype, instance_id=instance.instance_id)
        elif etype == codes.ENDED:
            self._release(dialog)
            binding.role = BACKGROUND_ROLE
            if self.background_limit > 0:
                binding.timer = self.clock.callLater(self.background_limit,
                                                     self._background_expired, binding)
            self._emit(dialog, codes.ENDED, program=instance.program, reason=codes.COMPLETED)
        elif etype == codes.UNSUPPORTED:
            last = dialog.last_user or {}
            self._release(dialog)
            self._stop(binding, reason="unsupported")
            self._emit(dialog, codes.UNSUPPORTED,
                       message_id=event.get("message_id") or last.get("message_id"),
                       messages=event.get("messages") or last.get("messages") or dict(EMPTY),
                       program=instance.program)

    def _hand_back(self, binding: Binding, event: dict[str, Any]) -> None:
        """A message the program received after it gave up the foreground
        (2002/2003 crossed it on the wire) is routed anew, never lost."""
        original = binding.forwarded.pop(str(event.get("message_id")), None)
        if original is None:
            self.log.warn("ignoring a hand-back of unknown message {message_id} from {instance_id}",
                          message_id=event.get("message_id"),
                          instance_id=binding.instance.instance_id)
            return
        dialog = binding.dialog
        if dialog.record.state == CLOSED:
            return  # the user closed the dialog meanwhile: nothing to route
        if dialog.foreground is binding.instance:  # still foreground: it declines it
            binding.forwarded[original["message_id"]] = original
            self.instanceEvent(binding.instance, {k: v for k, v in event.items()
                                                  if k != "handback"})
            return
        self.log.info("re-routing message {message_id} of {dialog_id} handed back by {program}",
                      message_id=original["message_id"], dialog_id=dialog.record.dialog_id,
                      program=binding.instance.program)
        self._user_message(None, dialog, original, recorded=True)

    def _background_expired(self, binding: Binding) -> None:
        binding.timer = None
        self.log.info("background instance {instance_id} of {dialog_id} reached its "
                      "{seconds}s limit; stopping it", instance_id=binding.instance.instance_id,
                      dialog_id=binding.dialog.record.dialog_id, seconds=self.background_limit)
        self._stop(binding, reason="background_limit")

    def instanceGone(self, instance: IInstance, connected: bool, detail: str) -> None:
        binding = self._bindings.pop(instance, None)
        if binding is None:
            return
        self._tokens.pop(instance.token, None)
        binding.cancel_timer()
        self._observe_instance("stop", instance.program, binding.stop_reason or (
            codes.PROGRAM_EXITED if connected else codes.PROGRAM_FAILED))
        dialog = binding.dialog
        self.log.info("instance {instance_id} ({program}) of {dialog_id} gone: {detail}",
                      instance_id=instance.instance_id, program=instance.program,
                      dialog_id=dialog.record.dialog_id, detail=detail)
        if dialog.foreground is instance:
            self._release(dialog)
            reason = codes.PROGRAM_EXITED if connected else codes.PROGRAM_FAILED
            self._emit(dialog, codes.ENDED, program=instance.program, reason=reason)

    # -- memory API support ----------------------------------------------------

    def token_info(self, token: str) -> TokenInfo | None:
        """Valid while the token's instance lives."""
        binding = self._tokens.get(token)
        if binding is None:
            return None
        return TokenInfo(binding.dialog.record.dialog_id, binding.dialog.record.user_id,
                         binding.instance.program)

    # -- introspection (metrics, tests) ------------------------------------

    def instances(self) -> Iterable[tuple[IInstance, str, str]]:
        """(instance, role, dialog_id) of every live instance."""
        return [(b.instance, b.role, b.dialog.record.dialog_id) for b in self._bindings.values()]

    def live_dialogs(self) -> int:
        return sum(1 for d in self._dialogs.values() if d.foreground is not None)
