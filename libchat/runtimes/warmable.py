"""What the warm pool needs of the runtime it wraps (and nothing more).

:class:`~libchat.runtimes.pool.WarmPool` is itself an
:class:`~libchat.interfaces.IRuntime`; it asks its inner runtime for
instances that have no dialog yet, watches their :class:`InstanceState`, and
later binds one to a dialog. A runtime whose instances are cheap to start
(an HTTP conversation, a remote client) need not implement this: it is only
wrapped in a pool when pre-starting saves something.
"""

from __future__ import annotations

import enum
from typing import Any

from zope.interface import Attribute

from libchat.interfaces import IInstance, IInstanceOwner, IRuntime


class InstanceState(enum.Enum):
    """The life of one instance: it only ever moves forward."""

    STARTING = "starting"  # spawned or queued; not connected yet
    RUNNING = "running"  # connected: events flow both ways
    EXITED = "exited"  # gone for good (after instanceGone)


class IWarmInstance(IInstance):
    """An instance that can be started before its dialog exists."""

    state = Attribute("InstanceState: where the instance is in its life")
    dialog_id = Attribute("str: the dialog it serves ('' while warm and unbound)")

    def bind(dialog_id: str, user_id: str, owner: IInstanceOwner) -> None:
        """Give the instance its one dialog: from now on its events go to
        ``owner``. Called at most once, by the pool that pre-started it."""


class IWarmableRuntime(IRuntime):
    """A runtime whose instances may be pre-started for the warm pool."""

    def prestart(program: str, owner: IInstanceOwner) -> IWarmInstance:
        """An instance of ``program`` with no dialog yet, started after any
        instance a dialog waits for; ``owner`` hears of it until it is bound."""

    def live() -> list[Any]:
        """Every instance not yet gone, bound or not (counted against
        ``--max-programs``)."""
