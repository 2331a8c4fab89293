"""Nothing leaves a cluster node before Redis has it (CONTRACT §14).

On a cluster node the router records each event in memory at once and Redis
answers later (:meth:`SharedDialogStore.synced`). :func:`gate` holds an event
back until its dialog's writes so far are in Redis, and drops it if they are
not (the dialog is then forgotten and reloaded). Both ways out are gated:

- to upstreams (the router's :class:`~libchat.cluster.router.GatedUpstream`
  and friends), so no user sees a reply Redis did not take;
- to programs (:class:`GatedRuntime`), so no program acts on a user message
  whose sender was told 2004, nor sees it twice when the sender retries.

Events of one dialog are released in the order they were recorded: Redis
answers one connection's commands in order.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.dialogs import SharedDialogStore
from libchat.interfaces import IInstance, IInstanceOwner, IResumingRuntime, IRuntime

log = Logger()


def gate(store: SharedDialogStore, event: dict[str, Any],
         send: Callable[[dict[str, Any]], object], dialog_id: str | None = None) -> None:
    """``send(event)`` once the event's dialog is written; dropped if it is not."""
    dialog_id = dialog_id or event.get("dialog_id")
    if not isinstance(dialog_id, str) or not store.owns(dialog_id):
        send(event)  # about no dialog this node owns: nothing to wait for
        return
    d = store.synced(dialog_id)
    d.addCallback(lambda _: send(event))
    d.addErrback(dropped, event, dialog_id)


def dropped(f: Failure, event: dict[str, Any], dialog_id: str) -> None:
    """An errback: the event's dialog was not written, so it does not leave."""
    log.info("cluster: not passing on a {etype} of {dialog_id}: {why}",
             etype=event.get("event_type"), dialog_id=dialog_id, why=f.getErrorMessage())


@implementer(IInstance)
class GatedInstance:
    """An instance as the router sees it: what it is sent waits for Redis."""

    def __init__(self, real: IInstance, store: SharedDialogStore, dialog_id: str) -> None:
        self.real = real
        self.store = store
        self.dialog_id = dialog_id

    def __getattr__(self, name: str) -> Any:  # instance_id, program, token, pid, reply_fields
        return getattr(self.real, name)

    def send(self, event: dict[str, Any]) -> None:
        gate(self.store, event, self.real.send, self.dialog_id)

    def stop(self, drain: float = 0.0) -> Any:
        return self.real.stop(drain)


@implementer(IInstanceOwner)
class _Owner:
    """The router, as the real runtime sees it: its reports name the gated
    instance the router knows."""

    def __init__(self, owner: IInstanceOwner, wrap: Callable[[IInstance], GatedInstance]) -> None:
        self.owner = owner
        self.wrap = wrap

    def instanceConnected(self, instance: IInstance) -> None:
        self.owner.instanceConnected(self.wrap(instance))

    def instanceEvent(self, instance: IInstance, event: dict[str, Any]) -> None:
        self.owner.instanceEvent(self.wrap(instance), event)

    def instanceGone(self, instance: IInstance, connected: bool, detail: str) -> None:
        self.owner.instanceGone(self.wrap(instance), connected, detail)


@implementer(IResumingRuntime)
class GatedRuntime:
    """Wraps the runtime a cluster node's router starts programs with."""

    def __init__(self, runtime: IRuntime, store: SharedDialogStore) -> None:
        self.runtime = runtime
        self.store = store

    def counts(self, program: str) -> bool:
        return bool(self.runtime.counts(program))

    def _wrapper(self, dialog_id: str) -> Callable[[IInstance], GatedInstance]:
        """One gated instance per real one of a dialog (the owner's reports
        and the router must name the same object)."""
        gated: dict[int, GatedInstance] = {}

        def wrap(real: IInstance) -> GatedInstance:
            g = gated.get(id(real))
            if g is None:
                g = gated[id(real)] = GatedInstance(real, self.store, dialog_id)
            return g
        return wrap

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> IInstance:
        wrap = self._wrapper(dialog_id)
        return wrap(self.runtime.start(program, dialog_id, user_id, _Owner(owner, wrap)))

    def resume(self, program: str, dialog_id: str, user_id: str,
               owner: IInstanceOwner) -> IInstance | None:
        """A dialog adopted by this node carries on where a resuming runtime
        kept it (the cluster's operator desk took the tickets over)."""
        if not IResumingRuntime.providedBy(self.runtime):
            return None
        wrap = self._wrapper(dialog_id)
        real = self.runtime.resume(program, dialog_id, user_id, _Owner(owner, wrap))
        return wrap(real) if real is not None else None

    def resumed(self) -> None:
        if IResumingRuntime.providedBy(self.runtime):
            self.runtime.resumed()

    def pauseEvents(self) -> None:
        self.runtime.pauseEvents()

    def resumeEvents(self) -> None:
        self.runtime.resumeEvents()

    def stopAll(self) -> Any:
        return self.runtime.stopAll()
