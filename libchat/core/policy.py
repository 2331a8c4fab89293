"""The router's decisions (docs/protocol.md §2, docs/protocol.md §2-3), apart from its public face.

:class:`Policy` decides what each user message, close, program event and
timer means for a dialog: resolve an intent and start an instance, answer
2003 or ``BUSY``, free the foreground, route a hand-back anew. It records
every outcome as one transcript entry and delivers the event derived from it.
:class:`~libchat.core.router.Router` builds it and adds what doors call.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.protocol import codes
from libchat.interfaces import (
    IInstance,
    IInstanceOwner,
    IRuntime,
    IStore,
    IUpstream,
    NoRoom,
    Receipt,
)
from libchat.core.bindings import BACKGROUND_ROLE, STOPPING_ROLE, Binding, Bindings
from libchat.core.delivery import Delivery
from libchat.core.dialog import Dialog, Dialogs
from libchat.core.library import ProgramLibrary
from libchat.core.transcript import Transcript
from libchat.storage.records import CLOSED, FOREGROUND, OPEN

NO_ANSWER = Receipt()


@implementer(IInstanceOwner)
class Policy:
    """The per-dialog rules; the state they act on is set up by the Router."""

    log = Logger()
    clock: IReactorTime
    library: ProgramLibrary
    runtime: IRuntime
    store: IStore
    idle_timeout: float
    max_programs: int
    kill_grace: float
    now: Callable[[], float]
    instance_observers: list[Callable[[str, str, Any], None]]
    _dialogs: Dialogs
    _transcript: Transcript
    _delivery: Delivery
    _bindings: Bindings
    # instances reported gone while runtime.start() was still running (an
    # instance without a process may fail at once): bound, then ended
    _gone_early: dict[IInstance, tuple[bool, str]] | None = None

    # -- user events -----------------------------------------------------------

    def _emit(self, dialog: Dialog, event_type: int, **fields: Any) -> dict[str, Any]:
        """Record one transcript entry and deliver the event derived from it."""
        event = self._transcript.emit(dialog.record, event_type, **fields)
        self._delivery.deliver(dialog, event)
        return event

    def _user_message(self, upstream: IUpstream | None, dialog: Dialog | None,
                      event: dict[str, Any], recorded: bool = False) -> Receipt:
        """A 1001 (or a message handed back, already ``recorded``)."""
        if dialog is not None and upstream is not None:
            dialog.upstream = upstream
        seq: int | None = None
        early: dict[IInstance, tuple[bool, str]] | None = None
        if dialog is None or dialog.foreground is None:
            intent = event.get("intent") or (dialog.record.intent if dialog else None)
            program = self.library.resolve(event["messages"]["content"], intent)
            fallback = getattr(upstream, "fallback", None)  # a platform app's (section 10)
            if program is None and intent is None and fallback:
                program = self.library.programs().get(fallback)
            if program is None:
                dialog = dialog or self._new_dialog(upstream, event)
                if not recorded:
                    seq = self._transcript.user_message(dialog.record, event)
                dialog.record.state = OPEN
                self._emit(dialog, codes.UNSUPPORTED, message_id=event["message_id"],
                           messages=event["messages"])
                return Receipt(seq=seq)
            counted = self.runtime.counts(program.name)
            if counted and self._bindings.counted >= self.max_programs:
                return self._busy(dialog, event, recorded,
                                  f"program limit of {self.max_programs} reached")
            self._gone_early = {}
            try:
                instance = self.runtime.start(program.name, event["dialog_id"],
                                              event["user_id"], self)
            except NoRoom as e:
                return self._busy(dialog, event, recorded,
                                  str(e) or f"no room for {program.name} now")
            finally:
                early, self._gone_early = self._gone_early, None
            # only now, with an instance, is a new dialog worth a record
            dialog = dialog or self._new_dialog(upstream, event)
            self._bind(dialog, instance, counted)
        if not recorded:
            seq = self._transcript.user_message(dialog.record, event)
        else:
            self.store.changed(dialog.record)  # its binding, if it got one
        dialog.last_user = event
        fg = dialog.foreground
        assert fg is not None
        if early and fg in early:  # it never ran: 2002 after the user's 1001
            self.instanceGone(fg, *early[fg])
            return Receipt(seq=seq)
        self._bindings.arm_idle(dialog)
        forward = event if "intent" not in event else {
            k: v for k, v in event.items() if k != "intent"}
        binding = self._bindings.get(fg)
        if binding is not None:
            binding.remember(forward)
        fg.send(forward)
        return Receipt(seq=seq)

    def _new_dialog(self, upstream: IUpstream | None, event: dict[str, Any]) -> Dialog:
        assert upstream is not None  # a hand-back always has its dialog
        dialog = self._dialogs.create(event["dialog_id"], event["user_id"], upstream.channel,
                                      self.now())
        dialog.upstream = upstream
        return dialog

    def _busy(self, dialog: Dialog | None, event: dict[str, Any], recorded: bool,
              why: str) -> Receipt:
        """2004 BUSY, recording nothing (not even a new dialog). A hand-back
        has no connection to answer on: its dialog's upstream is told instead."""
        busy = codes.error(codes.BUSY, why, dialog_id=event["dialog_id"],
                           message_id=event["message_id"])
        if recorded and dialog is not None:
            self._delivery.deliver(dialog, busy)
            return NO_ANSWER
        return Receipt(error=busy)

    def _bind(self, dialog: Dialog, instance: IInstance, counted: bool) -> None:
        self._bindings.bind(instance, dialog, counted)
        self._observe_instance("start", instance.program, None)
        dialog.foreground = instance
        dialog.record.program = instance.program
        dialog.record.state = FOREGROUND
        self.log.info("dialog {dialog_id} bound to {program} ({instance_id})",
                      dialog_id=dialog.record.dialog_id, program=instance.program,
                      instance_id=instance.instance_id)

    def _client_close(self, upstream: IUpstream, dialog: Dialog | None,
                      event: dict[str, Any]) -> Receipt:
        if dialog is None:  # nothing ran: still answer, keep no record
            upstream.deliver({"event_type": codes.ENDED, "dialog_id": event["dialog_id"],
                              "user_id": event["user_id"], "reason": codes.CLIENT_CLOSED})
            return NO_ANSWER
        dialog.upstream = upstream
        dialog.cancel_idle()
        fg = dialog.foreground
        dialog.foreground = None
        if fg is not None:
            fg.send(event)
        for binding in self._bindings.of_dialog(dialog):
            # the foreground gets time to run its close hook; all are gone
            # within the kill grace
            self._bindings.stop(binding, reason=codes.CLIENT_CLOSED,
                                drain=self.kill_grace / 2 if binding.instance is fg else 0.0)
        dialog.record.state = CLOSED
        ended = self._emit(dialog, codes.ENDED, program=dialog.record.program,
                           reason=codes.CLIENT_CLOSED)
        return Receipt(seq=ended["seq"])

    def _idle_expired(self, dialog: Dialog) -> None:
        fg = dialog.foreground
        binding = self._bindings.get(fg) if fg is not None else None
        if fg is None or binding is None:
            return
        self.log.info("dialog {dialog_id} idle for {seconds}s; stopping {program}",
                      dialog_id=dialog.record.dialog_id, seconds=self.idle_timeout,
                      program=fg.program)
        self._release(dialog)
        self._bindings.stop(binding, reason=codes.IDLE_TIMEOUT)
        self._emit(dialog, codes.ENDED, program=fg.program, reason=codes.IDLE_TIMEOUT)

    def _release(self, dialog: Dialog) -> None:
        """The foreground is free again: the next 1001 resolves an intent."""
        dialog.foreground = None
        dialog.cancel_idle()
        dialog.record.state = OPEN
        self.store.changed(dialog.record)

    def _observe_instance(self, what: str, program: str, detail: Any) -> None:
        for observe in self.instance_observers:
            observe(what, program, detail)

    # -- IInstanceOwner ------------------------------------------------------------------

    def instanceConnected(self, instance: IInstance) -> None:
        self.log.debug("instance {instance_id} connected", instance_id=instance.instance_id)
        binding = self._bindings.get(instance)
        if binding is not None:
            self._observe_instance("connected", instance.program,
                                   self.now() - binding.started_at)

    def instanceEvent(self, instance: IInstance, event: dict[str, Any]) -> None:
        binding = self._bindings.get(instance)
        etype = event["event_type"]
        if binding is not None and etype == codes.UNSUPPORTED and event.get("handback") is True:
            self._hand_back(binding, event)
            return
        if binding is None or binding.role == STOPPING_ROLE:
            self.log.info("ignoring a {etype} from stopping instance {instance_id}",
                          etype=etype, instance_id=instance.instance_id)
            return
        dialog = binding.dialog
        background = binding.role == BACKGROUND_ROLE
        if etype == codes.ERROR and event.get("code") == codes.BUSY:
            # a runtime without a process refuses one message (a hosted agent's
            # queue is full): the user is told, nothing is recorded
            self._delivery.deliver(dialog, codes.error(
                codes.BUSY, str(event.get("message") or "busy"),
                dialog_id=dialog.record.dialog_id, message_id=event.get("message_id")))
            return
        if etype == codes.REPLY:
            # a runtime without a process may add fields of its own (an
            # operator's id, a queue place); a program's extra fields are dropped
            kept = getattr(instance, "reply_fields", ())
            self._emit(dialog, codes.REPLY, message_id=event.get("message_id"),
                       messages=event["messages"], program=instance.program,
                       background=True if background else None,
                       **{k: event.get(k) for k in kept})
        elif background:
            self.log.info("ignoring a {etype} from background instance {instance_id}",
                          etype=etype, instance_id=instance.instance_id)
        elif etype == codes.ENDED:
            self._release(dialog)
            self._bindings.to_background(binding)
            self._emit(dialog, codes.ENDED, program=instance.program, reason=codes.COMPLETED)
        elif etype == codes.UNSUPPORTED:
            last = dialog.last_user or {}
            self._release(dialog)
            self._bindings.stop(binding, reason="unsupported")
            self._emit(dialog, codes.UNSUPPORTED,
                       message_id=event.get("message_id") or last.get("message_id"),
                       messages=event.get("messages") or last.get("messages"),
                       program=instance.program)

    def _hand_back(self, binding: Binding, event: dict[str, Any]) -> None:
        """A message the program received after it gave up the foreground
        (2002/2003 crossed it on the wire) is routed anew, never lost."""
        original = self._bindings.handed_back(binding, event.get("message_id"))
        if original is None:
            self.log.warn("ignoring a hand-back of unknown message {message_id} from {instance_id}",
                          message_id=event.get("message_id"),
                          instance_id=binding.instance.instance_id)
            return
        dialog = binding.dialog
        if dialog.record.state == CLOSED:
            return  # the user closed the dialog meanwhile: nothing to route
        if dialog.foreground is binding.instance:  # still foreground: it declines it
            binding.remember(original)
            self.instanceEvent(binding.instance, {k: v for k, v in event.items()
                                                  if k != "handback"})
            return
        self.log.info("re-routing message {message_id} of {dialog_id} handed back by {program}",
                      message_id=original["message_id"], dialog_id=dialog.record.dialog_id,
                      program=binding.instance.program)
        self._user_message(None, dialog, original, recorded=True)

    def instanceGone(self, instance: IInstance, connected: bool, detail: str) -> None:
        binding = self._bindings.gone(instance)
        if binding is None:
            if self._gone_early is not None:  # inside runtime.start(): not bound yet
                self._gone_early[instance] = (connected, detail)
            return
        reason = codes.PROGRAM_EXITED if connected else codes.PROGRAM_FAILED
        self._observe_instance("stop", instance.program, binding.stop_reason or reason)
        dialog = binding.dialog
        self.log.info("instance {instance_id} ({program}) of {dialog_id} gone: {detail}",
                      instance_id=instance.instance_id, program=instance.program,
                      dialog_id=dialog.record.dialog_id, detail=detail)
        if dialog.foreground is instance:
            self._release(dialog)
            # a failed start or a hosted agent's failed turn says why (docs/agents.md)
            self._emit(dialog, codes.ENDED, program=instance.program, reason=reason,
                       detail=detail if reason == codes.PROGRAM_FAILED and detail else None)
