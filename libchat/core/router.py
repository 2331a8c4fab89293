"""The router: binds each dialog to one program instance (docs/protocol.md §2, docs/protocol.md §2-3).

It knows upstreams, runtimes and the store only by their interfaces and takes
its clock by injection. Its jobs live in their own modules: the decisions
(:mod:`~libchat.core.policy`), dialogs (:mod:`~libchat.core.dialog`),
transcript entries and their events (:mod:`~libchat.core.transcript`),
delivery with the pending queue and backpressure
(:mod:`~libchat.core.delivery`), and instance bindings with their tokens and
timers (:mod:`~libchat.core.bindings`). This module is the public face.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.protocol import codes
from libchat.interfaces import (
    DialogInfo,
    IInstance,
    IRouter,
    IResumingRuntime,
    IRouterStats,
    IRuntime,
    IStore,
    IUpstream,
    Receipt,
    TokenInfo,
)
from libchat.core.bindings import Bindings
from libchat.core.delivery import Delivery
from libchat.core.dialog import Dialogs
from libchat.core.library import ProgramLibrary
from libchat.core.policy import Policy
from libchat.core.transcript import Transcript, entries, replay
from libchat.storage.records import FOREGROUND, OPEN

__all__ = ["Router"]


@implementer(IRouter, IRouterStats)
class Router(Policy):
    """What doors call (IRouter), what metrics read (IRouterStats), and what
    runtimes report to (IInstanceOwner, in :class:`Policy`)."""

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
        self.now = now or clock.seconds
        # metrics hooks (IRouterStats): ("in"/"out", event) for every event
        # from and to upstreams; instance lifecycle: ("start", program, None),
        # ("connected", program, seconds since start), ("stop", program, reason)
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        self.instance_observers: list[Callable[[str, str, Any], None]] = []
        self._dialogs = Dialogs(store)
        self._transcript = Transcript(store, self.now)
        self._delivery = Delivery(runtime, store, self.observers, max_pending=max_pending,
                                  pending_high=pending_high)
        self._bindings = Bindings(clock, self.now, idle_timeout=idle_timeout,
                                  background_limit=background_limit,
                                  on_idle=self._idle_expired)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Load kept dialogs. A dialog whose program was running when the
        previous server died is reopened, and its upstream is told with a
        2002 ``program_exited`` (delivered once an upstream connects).
        Replies a previous run kept for an absent upstream are queued again."""
        records = self.store.load()
        self._delivery.restore(self.store.pending())
        for record in records:
            self.recover(record)
        if IResumingRuntime.providedBy(self.runtime):
            self.runtime.resumed()

    def recover(self, record: Any) -> None:
        """A record the store already holds, whose program may have been
        running when its server went away (a restart, or a cluster node
        adopting a dead node's dialog): its upstream gets one 2002
        ``program_exited`` unless a resuming runtime carries it on."""
        # a last entry that is a user message means a crash came between
        # binding the dialog and journaling its state: treat it the same
        last = record.messages[-1].get("event_type") if record.messages else None
        if record.state == FOREGROUND or (last == codes.USER_MESSAGE
                                          and record.program is not None
                                          and record.state == OPEN):
            dialog = self._dialogs.wrap(record)
            if self._resume(dialog):
                return
            record.state = OPEN
            self._emit(dialog, codes.ENDED, program=record.program,
                       reason=codes.PROGRAM_EXITED)

    def forget(self, dialog_id: str) -> None:
        """Let go of a dialog this server no longer owns (a cluster node that
        lost it): its instances are stopped and nothing they send is recorded
        or delivered; the user is not told here (the new owner does that)."""
        dialog = self._dialogs.drop(dialog_id)
        if dialog is None:
            return
        dialog.foreground = None
        dialog.cancel_idle()
        for binding in self._bindings.of_dialog(dialog):
            self._bindings.stop(binding, reason="forgotten")

    def _resume(self, dialog: Any) -> bool:
        """Bind a dialog again to what a resuming runtime kept for it (human
        operators' queue and assignments, docs/operators.md)."""
        if not IResumingRuntime.providedBy(self.runtime):
            return False
        record = dialog.record
        instance = self.runtime.resume(record.program, record.dialog_id, record.user_id, self)
        if instance is None:
            return False
        self._bind(dialog, instance, self.runtime.counts(record.program))
        self._bindings.arm_idle(dialog)
        return True

    def stop(self) -> "defer.Deferred[Any]":
        """Cancel every timer, stop every instance, write what changed."""
        for dialog in self._dialogs:
            dialog.cancel_idle()
        self._bindings.cancel_timers()
        d = self.runtime.stopAll()
        d.addBoth(lambda _: self.store.flush())
        return d

    # -- IRouter: upstreams ----------------------------------------------------

    def attach(self, upstream: IUpstream) -> None:
        self._delivery.attach(upstream)

    def detach(self, upstream: IUpstream) -> None:
        self._delivery.detach(upstream)

    def drain(self, upstream: IUpstream) -> None:
        self._delivery.drain(upstream)

    # -- IRouter: dialogs --------------------------------------------------------

    def receive(self, upstream: IUpstream, event: dict[str, Any]) -> Receipt:
        for observe in self.observers:
            observe("in", event)
        dialog_id = event["dialog_id"]
        dialog = self._dialogs.get(dialog_id)
        if dialog is not None:
            record = dialog.record
            if record.user_id != event["user_id"]:
                return Receipt(error=codes.error(
                    codes.BAD_REQUEST, "dialog belongs to another user",
                    dialog_id=dialog_id, message_id=event.get("message_id")))
            if record.channel != upstream.channel:
                # a dialog stays with the front door family it was started on
                return Receipt(error=codes.error(
                    codes.BAD_REQUEST, f"dialog belongs to the {record.channel} front door",
                    dialog_id=dialog_id, message_id=event.get("message_id")))
        if event["event_type"] == codes.CLIENT_CLOSE:
            return self._client_close(upstream, dialog, event)
        return self._user_message(upstream, dialog, event)

    def open(self, dialog_id: str, user_id: str, channel: str,
             intent: str | None = None) -> DialogInfo:
        if self._dialogs.get(dialog_id) is not None:
            raise ValueError(f"dialog {dialog_id} exists")
        return self._dialogs.create(dialog_id, user_id, channel, self.now(), intent).info()

    def close(self, upstream: IUpstream, dialog_id: str, user_id: str) -> Receipt:
        return self.receive(upstream, {"event_type": codes.CLIENT_CLOSE,
                                       "dialog_id": dialog_id, "user_id": user_id})

    def info(self, dialog_id: str) -> DialogInfo | None:
        dialog = self._dialogs.get(dialog_id)
        return dialog.info() if dialog is not None else None

    def replay(self, dialog_id: str, after: int = 0,
               limit: int | None = None) -> list[dict[str, Any]]:
        dialog = self._dialogs.get(dialog_id)
        return replay(dialog.record, after, limit) if dialog is not None else []

    def entries(self, dialog_id: str, after: int = 0,
                limit: int | None = None) -> list[dict[str, Any]]:
        dialog = self._dialogs.get(dialog_id)
        return entries(dialog.record, after, limit) if dialog is not None else []

    def token_info(self, token: str) -> TokenInfo | None:
        return self._bindings.token_info(token)

    # -- IRouterStats --------------------------------------------------------------

    def live_dialogs(self) -> int:
        return self._dialogs.with_foreground()

    def instances(self) -> list[tuple[IInstance, str, str]]:
        return [(b.instance, b.role, b.dialog.record.dialog_id) for b in self._bindings]

    def pending_count(self, channel: str = "frame") -> int:
        return self._delivery.pending_count(channel)
