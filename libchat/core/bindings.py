"""Which instance serves which dialog, with the timers and tokens that go with it.

A binding lives from the moment the router starts an instance for a dialog
until the runtime reports the instance gone. It carries the instance's role
(foreground, background after its 2002, stopping), its memory API token, its
background lifetime timer, and the last user messages it was given, so a
message the program hands back can be routed anew. The dialog's idle timer is
armed here too; every timer is cancelled with its owner.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from libchat.interfaces import IInstance, TokenInfo
from libchat.core.dialog import Dialog

FOREGROUND_ROLE = "foreground"
BACKGROUND_ROLE = "background"
STOPPING_ROLE = "stopping"

MAX_HANDBACK = 64  # user messages remembered per instance for hand-backs


@attrs.define(eq=False)
class Binding:
    """What the router knows about one live instance."""

    instance: IInstance
    dialog: Dialog
    counted: bool = True  # counts against --max-programs
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


class Bindings:
    """Every live instance the router started, by instance and by token."""

    log = Logger()

    def __init__(self, clock: IReactorTime, now: Callable[[], float], *,
                 idle_timeout: float, background_limit: float,
                 on_idle: Callable[[Dialog], None]) -> None:
        self.clock = clock
        self.now = now
        self.idle_timeout = idle_timeout
        self.background_limit = background_limit
        self.on_idle = on_idle  # the router's policy when a dialog's idle timer fires
        self._by_instance: dict[IInstance, Binding] = {}
        self._by_token: dict[str, Binding] = {}
        self.counted = 0  # live instances that count against --max-programs

    # -- the table ---------------------------------------------------------------

    def bind(self, instance: IInstance, dialog: Dialog, counted: bool) -> Binding:
        binding = Binding(instance, dialog, counted=counted, started_at=self.now())
        self._by_instance[instance] = binding
        self._by_token[instance.token] = binding
        self.counted += counted
        return binding

    def get(self, instance: IInstance) -> Binding | None:
        return self._by_instance.get(instance)

    def gone(self, instance: IInstance) -> Binding | None:
        """Forget an instance that is gone for good (its token dies with it)."""
        binding = self._by_instance.pop(instance, None)
        if binding is not None:
            self._by_token.pop(instance.token, None)
            binding.cancel_timer()
            self.counted -= binding.counted
        return binding

    def of_dialog(self, dialog: Dialog) -> list[Binding]:
        return [b for b in self._by_instance.values() if b.dialog is dialog]

    def __iter__(self) -> Any:
        return iter(list(self._by_instance.values()))

    def token_info(self, token: str) -> TokenInfo | None:
        """Valid while the token's instance lives."""
        binding = self._by_token.get(token)
        if binding is None:
            return None
        record = binding.dialog.record
        return TokenInfo(record.dialog_id, record.user_id, binding.instance.program)

    # -- roles and timers ----------------------------------------------------------

    def stop(self, binding: Binding, drain: float = 0.0, reason: str = "stopped") -> None:
        binding.role = STOPPING_ROLE
        binding.stop_reason = binding.stop_reason or reason
        binding.cancel_timer()
        binding.instance.stop(drain)

    def to_background(self, binding: Binding) -> None:
        """The program gave the foreground back (2002) but may still send
        background replies, for at most ``background_limit`` seconds."""
        binding.role = BACKGROUND_ROLE
        if self.background_limit > 0:
            binding.timer = self.clock.callLater(self.background_limit,
                                                 self._background_expired, binding)

    def _background_expired(self, binding: Binding) -> None:
        binding.timer = None
        self.log.info("background instance {instance_id} of {dialog_id} reached its "
                      "{seconds}s limit; stopping it", instance_id=binding.instance.instance_id,
                      dialog_id=binding.dialog.record.dialog_id, seconds=self.background_limit)
        self.stop(binding, reason="background_limit")

    def arm_idle(self, dialog: Dialog) -> None:
        """(Re)start the dialog's idle timer: a user message just came."""
        if dialog.idle is not None and dialog.idle.active():
            dialog.idle.reset(self.idle_timeout)
        else:
            dialog.idle = self.clock.callLater(self.idle_timeout, self._idle_expired, dialog)

    def _idle_expired(self, dialog: Dialog) -> None:
        dialog.idle = None
        self.on_idle(dialog)

    def handed_back(self, binding: Binding, message_id: Any) -> dict[str, Any] | None:
        """The user message an instance hands back, if it was given it."""
        return binding.forwarded.pop(str(message_id), None)

    def cancel_timers(self) -> None:
        for binding in self._by_instance.values():
            binding.cancel_timer()
