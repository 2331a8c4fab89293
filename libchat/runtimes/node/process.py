"""Supervision of one child process group, in Twisted procmon's discipline.

SIGTERM to the process group (after an optional drain), one ``callLater``
SIGKILL timer cancelled on exit, ``ProcessExitedAlready`` and ``ESRCH``
tolerated; when the leader exits the rest of its group is killed too (a
grandchild must not outlive its program). The supervisor knows nothing of
sockets or dialogs.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any, Callable

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


def exit_detail(reason: Failure) -> str:
    """``exit code N`` or ``signal N``, as the router reports it."""
    status = getattr(reason.value, "exitCode", None)
    sig = getattr(reason.value, "signal", None)
    return f"exit code {status}" if sig is None else f"signal {sig}"


class Supervisor:
    """Spawns one child and ends it: TERM, then KILL after ``grace``."""

    def __init__(self, reactor: Any, grace: float,
                 on_kill: Callable[[], None] = lambda: None) -> None:
        self.reactor = reactor
        self.grace = grace
        self.on_kill = on_kill  # told before a SIGKILL (a program ignored SIGTERM)
        self.process: Any = None
        self.exited = False
        self.terminating = False
        self._term: IDelayedCall | None = None
        self._kill: IDelayedCall | None = None

    def spawn(self, protocol: ProcessProtocol, argv: list[str], env: dict[str, str],
              path: str | None) -> int:
        """Start the child (stdin a pipe, stdout/stderr read); raises what
        ``spawnProcess`` raises."""
        self.process = self.reactor.spawnProcess(protocol, argv[0], argv, env=env, path=path,
                                                 childFDs={0: "w", 1: "r", 2: "r"})
        return int(self.process.pid)

    def launch(self, launcher: Any, protocol: ProcessProtocol, argv: list[str],
               env: dict[str, str], path: str | None) -> Any:
        """Start the child through ``launcher`` (a
        :class:`~libchat.runtimes.node.spawner.LauncherClient`): returns at
        once, the pid is known a moment later."""
        self.process = launcher.spawn(protocol, argv, env, path)
        return self.process

    @property
    def pid(self) -> int | None:
        """The child's pid (None before the spawn, or while the launcher
        has not answered yet)."""
        return None if self.process is None else self.process.pid

    def signal(self, sig: int) -> None:
        """Signal the whole group; a child that has not called setsid yet
        has no group: signal it alone (so does a launched one whose pid is not
        known yet: the launcher signals it once it is)."""
        if self.process is None or self.exited:
            return
        if self.pid is None:
            try:
                self.process.signalProcess("KILL" if sig == signal.SIGKILL else "TERM")
            except ProcessExitedAlready:
                pass
            return
        try:
            os.killpg(self.pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
            try:
                self.process.signalProcess("KILL" if sig == signal.SIGKILL else "TERM")
            except ProcessExitedAlready:
                pass

    def terminate(self, drain: float = 0.0) -> None:
        """SIGTERM now (or after ``drain`` s, to let the program finish by
        itself), SIGKILL ``grace`` s later if it is still there. Once only."""
        if self.terminating or self.exited:
            return
        self.terminating = True
        if drain > 0:
            self._term = self.reactor.callLater(drain, self.signal, signal.SIGTERM)
        else:
            self.signal(signal.SIGTERM)
        self._kill = self.reactor.callLater(max(self.grace, drain + 0.001), self._sigkill)

    def _sigkill(self) -> None:
        self._kill = None
        if not self.exited:
            self.on_kill()
            self.signal(signal.SIGKILL)

    def ended(self) -> None:
        """The leader exited: cancel the timers, take the rest of the group."""
        self.exited = True
        self.cancel()
        if self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def cancel(self) -> None:
        for timer in (self._term, self._kill):
            if timer is not None and timer.active():
                timer.cancel()
        self._term = self._kill = None
