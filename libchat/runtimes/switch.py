"""One :class:`~libchat.interfaces.IRuntime` in front of every runtime.

A program declares its runtime in its ``package.json``
(``"libchat": {"runtime": "node"}``, default ``"node"``); the router starts
every instance through a :class:`RuntimeSwitch`, which hands the start to the
runtime of that name. Adding a runtime (hosted agents, remote clients, human
operators) is one more entry in the switch's table, in ``tap.py``; the router
does not change.

A program naming a runtime the switch does not have is refused where it is
found: the switch tells the library its runtime names, and the library logs
the program at scan time and never lists it (so it is never chosen, and a
message for it gets 2003 like any unknown intent).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from libchat.core.library import DEFAULT_RUNTIME, ProgramLibrary
from libchat.interfaces import IInstance, IInstanceOwner, IResumingRuntime, IRuntime, NoRoom


@implementer(IResumingRuntime)
class RuntimeSwitch:
    """Dispatches by the program's declared runtime."""

    def __init__(self, library: ProgramLibrary, runtimes: dict[str, IRuntime]) -> None:
        if DEFAULT_RUNTIME not in runtimes:
            raise ValueError(f"the runtime switch needs a {DEFAULT_RUNTIME!r} runtime")
        self.library = library
        self.runtimes = dict(runtimes)
        library.accept_runtimes(self.runtimes)

    def runtime_of(self, program: str) -> IRuntime:
        """The runtime for a program (the default one for a program that
        vanished: it then fails to start the usual way). ``NoRoom`` for a
        runtime that does not exist (the library never lists such a program;
        this guards a library used without a switch)."""
        p = self.library.get(program)
        name = p.runtime if p is not None else DEFAULT_RUNTIME
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise NoRoom(f"program {program} names an unknown runtime {name!r}")
        return runtime

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> IInstance:
        return self.runtime_of(program).start(program, dialog_id, user_id, owner)

    def resume(self, program: str, dialog_id: str, user_id: str,
               owner: IInstanceOwner) -> IInstance | None:
        try:
            runtime = self.runtime_of(program)
        except NoRoom:
            return None
        if not IResumingRuntime.providedBy(runtime):
            return None
        return runtime.resume(program, dialog_id, user_id, owner)  # type: ignore[no-any-return]

    def resumed(self) -> None:
        for runtime in self.runtimes.values():
            if IResumingRuntime.providedBy(runtime):
                runtime.resumed()

    def counts(self, program: str) -> bool:
        try:
            return bool(self.runtime_of(program).counts(program))
        except NoRoom:
            return False

    def pauseEvents(self) -> None:
        for runtime in self.runtimes.values():
            runtime.pauseEvents()

    def resumeEvents(self) -> None:
        for runtime in self.runtimes.values():
            runtime.resumeEvents()

    def stopAll(self) -> "defer.Deferred[Any]":
        return defer.DeferredList([defer.maybeDeferred(r.stopAll)
                                   for r in self.runtimes.values()], consumeErrors=True)
