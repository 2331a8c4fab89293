"""A real ``twistd`` subprocess seen from the reactor: Deferreds over the
shared launcher (``tests/launcher.py``).

``start(args, cwd)`` runs ``twistd *args`` exactly as given (the README's
bare ``twistd -n libchat``, a daemonizing twistd, bad options), so it is the
launcher's ``Process``, not its ``Libchat`` (which adds port-0 listeners).
Output is read by the launcher's threads and handed to the reactor with
``callFromThread``; ``ready`` fires with {role: port} at ``libchat ready``,
``ended`` with ``ProcessDone``/``ProcessTerminated`` when twistd exits.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.internet.interfaces import IReactorFromThreads

from .launcher import LISTENING, READY, TWISTD as _TWISTD, Process

TWISTD = str(_TWISTD)
_threads: IReactorFromThreads = reactor  # type: ignore[assignment]


class Twistd:
    """One twistd run: ``output`` (bytes so far), ``ports``, ``ready``, ``ended``, ``pid``."""

    def __init__(self) -> None:
        self.output = b""
        self.errors = b""  # stderr alone, when started with ``stderr_apart``
        self.ports: dict[str, int] = {}
        self.ready: defer.Deferred[dict[str, int]] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.pid: int | None = None
        self.process: Process | None = None

    def lineReceived(self, line: str) -> None:
        self.output += line.encode() + b"\n"
        m = LISTENING.search(line)
        if m:
            self.ports[m.group(1)] = int(m.group(3))
        if not self.ready.called and READY in line:
            self.ready.callback(self.ports)

    def errReceived(self, line: str) -> None:
        self.errors += line.encode() + b"\n"
        self.lineReceived(line)

    def processEnded(self, code: int) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("twistd ended before ready:\n"
                                            + self.output.decode(errors="replace")))
        reason: Exception = (error.ProcessDone(None) if code == 0 else error.ProcessTerminated(
            exitCode=code if code > 0 else None, signal=-code if code < 0 else None))
        self.ended.callback(reason)


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None,
          stderr_apart: bool = False) -> Twistd:
    proto = Twistd()
    on_err = ((lambda line: _threads.callFromThread(proto.errReceived, line))
              if stderr_apart else None)
    proc = Process([TWISTD, *args], cwd=cwd, env=dict(os.environ if env is None else env),
                   on_line=lambda line: _threads.callFromThread(proto.lineReceived, line),
                   on_exit=lambda code: _threads.callFromThread(proto.processEnded, code),
                   on_err=on_err)
    proto.process = proc.spawn()
    proto.pid = proc.pid
    return proto


def kill(proto: Twistd, sig: int = signal.SIGTERM) -> None:
    if not proto.ended.called and proto.process is not None:
        proto.process.signal(sig)


def stop(proto: Twistd, grace: float = 5.0) -> defer.Deferred[None]:
    """SIGTERM, so twistd stops its programs and removes its runtime directory;
    SIGKILL if it is still running after ``grace`` seconds. Fires once it ended."""
    if proto.ended.called or proto.pid is None:
        return defer.succeed(None)
    done: defer.Deferred[None] = defer.Deferred()
    killer = reactor.callLater(grace, kill, proto, signal.SIGKILL)

    def ended(result: Any) -> Any:
        if killer.active():
            killer.cancel()
        done.callback(None)
        return result

    proto.ended.addBoth(ended)
    kill(proto)
    return done
