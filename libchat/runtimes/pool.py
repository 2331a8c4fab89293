"""The warm pool: program instances started ahead of need (the README's options ``--warm``).

:class:`WarmPool` wraps another runtime and is itself an
:class:`~libchat.interfaces.IRuntime`: ``start()`` hands out an idle warm
instance, bound to the dialog, or delegates to the inner runtime. Of the
inner runtime it needs only :class:`~libchat.runtimes.warmable.IWarmableRuntime`
(``prestart``, ``live``, instances with ``bind`` and an explicit state), so the
runtime never calls back into the pool.

A new dialog's first reply then costs a message round trip (~1 ms) instead of
Node's start-up (~60 ms). The rules, and why:

- **One instance, one dialog.** A warm instance has its own fresh socket and
  token like any other; it is handed to exactly one dialog and never returns to
  the pool (it is stopped when its dialog is done), so nothing is ever shared
  or reused across dialogs. The program learns its dialog from the first frame
  it receives, so programs need no change (there is no ``LIBCHAT_DIALOG_ID``
  in a warm instance's environment).
- **Tokens.** The memory API accepts a token only once the router has bound
  its instance to a dialog; an idle warm instance's token is unknown (401).
- **Size.** ``--warm N`` per program; a program's ``package.json``
  ``"libchat": {"warm": N}`` overrides it (``0`` turns the pool off for it).
- **``--max-programs``** counts warm instances too. The pool only fills free
  room, and yields it: a dialog that needs a cold start while the limit is
  reached evicts an idle warm instance of another program.
- **Refill** after every hand-out and whenever an idle instance dies, at most
  one spawn per ``interval`` seconds, as pre-starts behind any dialog's spawn
  (:class:`~libchat.runtimes.spawning.SpawnGate`). An instance that dies while idle is
  replaced after a back-off that doubles with each consecutive failure (up to
  ``max_backoff``): a broken program cannot crash-loop. No refill at shutdown.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.core.library import ProgramLibrary
from libchat.interfaces import IInstance, IInstanceOwner, IRuntime
from libchat.runtimes.warmable import InstanceState, IWarmableRuntime, IWarmInstance


@implementer(IRuntime, IInstanceOwner)
class WarmPool(service.Service):
    """Keeps ``size(program)`` idle instances of each program ready, in front
    of ``runtime``. As a service it fills while running (never before twistd
    daemonizes)."""

    log = Logger()

    def __init__(self, runtime: IWarmableRuntime, library: ProgramLibrary,
                 clock: IReactorTime, *,
                 default_size: int = 0, max_instances: int = 256, interval: float = 0.05,
                 tend_every: float = 1.0, backoff: float = 0.5,
                 max_backoff: float = 60.0, refill_delay: float = 0.25) -> None:
        self.runtime = runtime
        self.library = library
        self.clock = clock
        self.default_size = default_size
        self.max_instances = max_instances
        self.interval = interval
        self.tend_every = tend_every
        self.backoff = backoff
        self.max_backoff = max_backoff
        # a refill right after a hand-out would spawn (and boot a Node, ~100 ms
        # of CPU) exactly while the new dialog's first reply is on its way
        self.refill_delay = refill_delay
        self._idle: dict[str, deque[IWarmInstance]] = {}
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._next: IDelayedCall | None = None
        self._last_spawn = float("-inf")
        self.closed = True
        self._fill_waiters: list[tuple[str, defer.Deferred[None]]] = []

    # -- sizes ----------------------------------------------------------------

    def size(self, program: str) -> int:
        p = self.library.get(program)
        if p is None:
            return 0
        return self.default_size if p.warm is None else p.warm

    def idle(self, program: str) -> int:
        return len(self._idle.get(program, ()))

    def ready(self, program: str) -> int:
        """Idle instances of ``program`` already connected."""
        return sum(1 for i in self._idle.get(program, ()) if i.state is InstanceState.RUNNING)

    def filled(self, program: str) -> defer.Deferred[None]:
        """Fires once ``program`` has its full pool connected (tests, benchmarks)."""
        d: defer.Deferred[None] = defer.Deferred()
        self._fill_waiters.append((program, d))
        self._check_filled()
        return d

    def _check_filled(self) -> None:
        waiting, self._fill_waiters = self._fill_waiters, []
        for program, d in waiting:
            if self.ready(program) >= self.size(program):
                d.callback(None)
            else:
                self._fill_waiters.append((program, d))

    def sizes(self) -> dict[str, int]:
        """Idle instances per program (metrics, tests)."""
        return {name: len(q) for name, q in self._idle.items() if q}

    def room(self) -> int:
        """How many more live instances ``--max-programs`` allows."""
        return self.max_instances - len(self.runtime.live())

    # -- IRuntime --------------------------------------------------------------

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> IInstance:
        """An instance for a dialog: a warm one when the pool has one (then
        usually connected already), else a new one from the inner runtime,
        after evicting an idle warm instance if ``--max-programs`` would be
        exceeded."""
        warm = self.take(program)
        if warm is not None:
            warm.bind(dialog_id, user_id, owner)
            return warm
        if self.room() <= 0:
            self.make_room(program)
        return self.runtime.start(program, dialog_id, user_id, owner)

    def counts(self, program: str) -> bool:
        return bool(self.runtime.counts(program))

    def pauseEvents(self) -> None:
        self.runtime.pauseEvents()

    def resumeEvents(self) -> None:
        self.runtime.resumeEvents()

    def stopAll(self) -> defer.Deferred[Any]:
        """No refill while everything stops; then every instance, idle or
        bound, is stopped by the inner runtime."""
        self._close()
        self._idle.clear()
        return defer.maybeDeferred(self.runtime.stopAll)

    def live(self) -> list[Any]:
        return list(self.runtime.live())

    # -- the pool itself --------------------------------------------------------

    def take(self, program: str) -> IWarmInstance | None:
        """An idle instance for a new dialog (oldest first: it is the most
        likely to be connected already), or None. Triggers a refill."""
        q = self._idle.get(program)
        if not q:
            return None
        instance = q.popleft()
        self._failures.pop(program, None)  # it proved useful: forget past failures
        self._schedule(self.refill_delay)
        return instance

    def make_room(self, program: str) -> bool:
        """Evict one idle instance of another program (the largest pool) so
        that a dialog of ``program`` can start; False if there is none."""
        candidates = [(len(q), name) for name, q in self._idle.items() if q and name != program]
        if not candidates:
            candidates = [(len(q), name) for name, q in self._idle.items() if q]
        if not candidates:
            return False
        _, name = max(candidates)
        victim = self._idle[name].pop()  # the newest: the least likely connected
        self.log.info("warm pool yields an idle {program} instance to a dialog of {wanted}",
                      program=name, wanted=program)
        victim.stop()
        return True

    # -- filling --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.closed = False
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.closed:
            return
        if self._next is not None and self._next.active():
            if self._next.getTime() <= self.clock.seconds() + delay:
                return
            self._next.cancel()
        self._next = self.clock.callLater(delay, self._tend)

    def _tend(self) -> None:
        """Start at most one instance, then come back: soon while some pool
        is short, every ``tend_every`` seconds otherwise (library changes)."""
        self._next = None
        if self.closed:
            return
        now = self.clock.seconds()
        programs = self.library.programs()
        for name in list(self._idle):
            wanted = self.size(name) if name in programs else 0
            while len(self._idle[name]) > wanted:
                self._idle[name].pop().stop()
        short = [name for name in programs
                 if self.idle(name) < self.size(name)
                 and self._not_before.get(name, 0.0) <= now]
        delay = self.tend_every
        if short and self.room() > 0:
            wait = self._last_spawn + self.interval - now
            if wait <= 0:
                self._spawn(min(short, key=lambda n: (self.idle(n), n)))
                wait = self.interval
            delay = wait
        pending = [t for t in self._not_before.values() if t > now]
        if pending:
            delay = min(delay, min(pending) - now)
        self._schedule(max(0.0, delay))

    def _spawn(self, program: str) -> None:
        self._last_spawn = self.clock.seconds()
        instance = self.runtime.prestart(program, self)
        self._idle.setdefault(program, deque()).append(instance)

    # -- IInstanceOwner, while idle -------------------------------------------

    def instanceConnected(self, instance: Any) -> None:
        self.log.debug("warm {program} instance {instance_id} ready",
                       program=instance.program, instance_id=instance.instance_id)
        self._check_filled()

    def instanceEvent(self, instance: Any, event: dict[str, Any]) -> None:
        self.log.warn("idle warm instance {instance_id} of {program} sent a {etype} before "
                      "any message; ignored", instance_id=instance.instance_id,
                      program=instance.program, etype=event.get("event_type"))

    def instanceGone(self, instance: Any, connected: bool, detail: str) -> None:
        q = self._idle.get(instance.program)
        if q is None or instance not in q:
            return  # evicted, trimmed or stopped at shutdown: not a failure
        q.remove(instance)
        if self.closed:
            return
        n = self._failures[instance.program] = self._failures.get(instance.program, 0) + 1
        delay = min(self.max_backoff, self.backoff * 2 ** (n - 1))
        self._not_before[instance.program] = self.clock.seconds() + delay
        self.log.warn("idle warm instance of {program} {what} ({detail}); replacing it in "
                      "{delay:.1f}s", program=instance.program, detail=detail, delay=delay,
                      what="exited" if connected else "failed to start")
        self._schedule(delay)

    # -- stopping -------------------------------------------------------------

    def _close(self) -> None:
        self.closed = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def stopService(self) -> defer.Deferred[Any]:
        """No more refills; every idle instance is stopped."""
        super().stopService()
        self._close()
        idle = [i for q in self._idle.values() for i in q]
        self._idle.clear()
        return defer.DeferredList([i.stop() for i in idle], consumeErrors=True)

