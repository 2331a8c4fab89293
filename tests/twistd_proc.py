"""A real ``twistd`` subprocess, waited on by its readiness log lines."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor

TWISTD = str(Path(sys.executable).parent / "twistd")
LISTENING = re.compile(rb"libchat (\w+) listening on [\d.]+:(\d+)")


class Twistd(protocol.ProcessProtocol):
    """Collects output; ``ready`` fires with {role: port} at 'libchat ready'."""

    def __init__(self) -> None:
        self.output = b""
        self.ports: dict[str, int] = {}
        self.ready: defer.Deferred[dict[str, int]] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for role, port in LISTENING.findall(self.output):
            self.ports[role.decode()] = int(port)
        if not self.ready.called and b"libchat ready" in self.output:
            self.ready.callback(self.ports)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("twistd ended before ready:\n"
                                            + self.output.decode(errors="replace")))
        self.ended.callback(reason.value)


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Twistd:
    proto = Twistd()
    full_env = dict(os.environ if env is None else env)
    reactor.spawnProcess(proto, TWISTD, [TWISTD, *args], env=full_env, path=str(cwd))
    return proto


def kill(proto: Twistd, sig: int = signal.SIGTERM) -> None:
    if not proto.ended.called and proto.pid is not None:
        try:
            os.kill(proto.pid, sig)
        except ProcessLookupError:
            pass


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
