"""libchat's side of the launcher (:mod:`.launcher`): spawning off the reactor.

:meth:`LauncherClient.spawn` makes the child's three pipes, sends one request
with their far ends to the launcher process and returns at once (a
``sendmsg``, some microseconds) with a :class:`LaunchedProcess` whose pid
arrives a moment later. The child's stdout and stderr are read here, as
``spawnProcess`` would; its exit comes from the launcher (which is its
parent and reaps it) and reaches the :class:`ProcessProtocol` as
``processEnded`` with Twisted's own ``ProcessDone``/``ProcessTerminated``.

The launcher is started at the first spawn, with ``spawnProcess`` (once), and
restarted at the next spawn if it ever dies; the children of a dead launcher
are killed and reported gone (their exit could not be told otherwise).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable

from twisted.internet import abstract, defer, fdesc
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from libchat.runtimes.node import launcher as launcher_module
from libchat.runtimes.node.reaper import MARKER

log = Logger()

SETTLE_WAIT = 0.5  # seconds at most to learn a pid we need right now (see settle)


def exit_reason(status: int) -> Failure:
    """A wait status as Twisted's ``Process`` would report it."""
    if os.WIFSIGNALED(status):
        return Failure(ProcessTerminated(None, os.WTERMSIG(status), status))
    code = os.WEXITSTATUS(status)
    if code == 0:
        return Failure(ProcessDone(status))
    return Failure(ProcessTerminated(code, None, status))


class PipeReader(abstract.FileDescriptor):
    """One output pipe of a child (stdout or stderr), read into its protocol."""

    def __init__(self, reactor: Any, fd: int, on_data: Callable[[bytes], None]) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self.fd = fd
        self.on_data = on_data
        self.startReading()

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self.fd, self.on_data)

    def writeSomeData(self, data: bytes) -> int:  # pragma: no cover - never written
        return 0

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LaunchedProcess:
    """A child started by the launcher: Twisted's process transport, reduced
    to what libchat uses (``pid``, ``signalProcess``, ``closeStdin``)."""

    def __init__(self, client: "LauncherClient", ident: int, protocol: ProcessProtocol,
                 stdin: int) -> None:
        self.client = client
        self.ident = ident
        self.protocol = protocol
        self.pid: int | None = None
        self.started: defer.Deferred[int] = defer.Deferred()
        self.exited = False
        self._stdin: int | None = stdin
        self._readers: list[PipeReader] = []
        self._pending_signal: int | None = None

    def signalProcess(self, name: str | int) -> None:
        """``TERM``/``KILL``/a number, to the child itself, through its parent
        (which knows whether the pid is still the child's)."""
        if self.exited:
            raise ProcessExitedAlready()
        sig = name if isinstance(name, int) else getattr(signal, f"SIG{name}")
        if self.pid is None:  # the launcher has not answered yet
            self._pending_signal = sig
            return
        self.client.send({"op": "signal", "pid": self.pid, "sig": sig})

    def booted(self) -> None:
        """The program connected: back to normal CPU priority."""
        if self.pid is not None and not self.exited:
            self.client.send({"op": "booted", "pid": self.pid})

    def closeStdin(self) -> None:
        if self._stdin is not None:
            os.close(self._stdin)
            self._stdin = None

    # -- from the client ------------------------------------------------------------

    def _spawned(self, pid: int) -> None:
        self.pid = pid
        self.started.callback(pid)
        if self._pending_signal is not None:
            self.signalProcess(self._pending_signal)

    def _failed(self, error: str) -> None:
        self.exited = True
        self.closeStdin()
        for r in self._readers:
            r.loseConnection()
        self.started.errback(Failure(OSError(error)))

    def _exited(self, status: int) -> None:
        if self.exited:
            return
        self.exited = True
        self.closeStdin()  # the readers end by themselves (EOF)
        self.protocol.processEnded(exit_reason(status))


class _Control(abstract.FileDescriptor):
    """The SOCK_SEQPACKET end libchat holds: whole messages, descriptors attached."""

    def __init__(self, reactor: Any, sock: socket.socket, client: "LauncherClient") -> None:
        super().__init__(reactor)
        self.sock = sock
        self.client = client
        self._out: deque[tuple[bytes, list[int]]] = deque()
        self.startReading()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes, fds: list[int]) -> None:
        if not self._out and self._send_one(data, fds):
            return
        self._out.append((data, fds))
        self.startWriting()

    def _send_one(self, data: bytes, fds: list[int]) -> bool:
        try:
            socket.send_fds(self.sock, [data], fds)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                return True  # the launcher is gone; its end is reported by doRead
            raise
        for fd in fds:
            os.close(fd)
        return True

    def doWrite(self) -> Any:
        while self._out:
            data, fds = self._out[0]
            if not self._send_one(data, fds):
                return None
            self._out.popleft()
        self.stopWriting()
        return None

    def doRead(self) -> Any:
        for _ in range(256):  # bounded: let the reactor run other work
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            if not data:
                self.client._launcher_gone("its socket closed")
                return None
            self.client._message(json.loads(data))
        return None

    def read_now(self, timeout: float) -> None:
        """Read what the launcher has sent, waiting up to ``timeout`` s for
        one message (only when a pid is needed before the reactor reads it)."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if ready:
            self.doRead()

    def writeSomeData(self, data: bytes) -> int:  # pragma: no cover - send() only
        return 0

    def close(self) -> None:
        self.stopReading()
        self.stopWriting()
        for _, fds in self._out:
            for fd in fds:
                os.close(fd)
        self._out.clear()
        self.sock.close()


class _LauncherProtocol(ProcessProtocol):
    def __init__(self, client: "LauncherClient") -> None:
        self.client = client
        self.ended: defer.Deferred[None] = defer.Deferred()

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("[launcher] {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.client._launcher_gone(reason.getErrorMessage(), self)
        self.ended.callback(None)


class LauncherClient:
    """Spawns program processes through a launcher process (see module doc)."""

    def __init__(self, reactor: Any, grace: float, low_priority: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.reactor = reactor
        self.grace = grace
        self.low_priority = low_priority
        base = dict(os.environ if env is None else env)
        base.pop(MARKER, None)  # not one of the run's programs: the watchdog counts those
        self.env = base
        self.low_priority_boot: bool | None = None  # told by the launcher at start
        self._ids = 0
        self._control: _Control | None = None
        self._protocol: _LauncherProtocol | None = None
        self._waiting: dict[int, LaunchedProcess] = {}  # by request id, pid not known yet
        self._live: dict[int, LaunchedProcess] = {}  # by pid
        self.closed = False

    # -- the launcher process ---------------------------------------------------------

    def start(self) -> None:
        """Start the launcher now (the service starts it with the server, so
        the first program does not wait for it, and the descriptors it holds
        are there from the start); spawning starts it again if it died."""
        if not self.closed:
            self._ensure()

    def _ensure(self) -> _Control:
        if self._control is not None:
            return self._control
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setblocking(False)
            protocol = _LauncherProtocol(self)
            # -I -S: the launcher is standard library only; start it fast
            argv = [sys.executable, "-I", "-S", str(Path(launcher_module.__file__)),
                    str(self.grace)]
            self.reactor.spawnProcess(protocol, sys.executable, argv, env=self.env,
                                      childFDs={0: "w", 1: "r", 2: "r",
                                                launcher_module.CONTROL_FD: theirs.fileno()})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._protocol = protocol
        self._control = _Control(self.reactor, ours, self)
        return self._control

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        self._ensure().send(json.dumps(message).encode(), fds or [])

    def _message(self, m: dict[str, Any]) -> None:
        op = m.get("op")
        if op == "spawned":
            p = self._waiting.pop(m["id"], None)
            if p is not None:
                self._live[m["pid"]] = p
                p._spawned(m["pid"])
        elif op == "failed":
            p = self._waiting.pop(m["id"], None)
            if p is not None:
                p._failed(m["error"])
        elif op == "exit":
            p = self._live.pop(m["pid"], None)
            if p is not None:
                p._exited(m["status"])
        elif op == "hello":
            self.low_priority_boot = bool(m.get("low_priority_boot"))
            log.info("launcher started as pid {pid} (booting programs at "
                     "{priority} priority)", pid=m.get("pid"),
                     priority="idle" if self.low_priority_boot else "normal")

    def _launcher_gone(self, why: str, protocol: _LauncherProtocol | None = None) -> None:
        """Its socket closed or it exited: every child it had is killed and
        reported gone; the next spawn starts a new launcher."""
        if protocol is not None and protocol is not self._protocol:
            return  # an earlier launcher, already handled
        if self._control is None:
            return
        self._control.close()
        self._control = None
        self._protocol = None
        if not self.closed:
            log.error("the launcher is gone ({why}); killing its {n} programs",
                      why=why, n=len(self._live))
        waiting, self._waiting = self._waiting, {}
        live, self._live = self._live, {}
        for p in waiting.values():
            p._failed("the launcher is gone")
        for pid, p in live.items():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            p._exited(signal.SIGKILL)  # a wait status of "killed by SIGKILL"

    # -- spawning -----------------------------------------------------------------------

    def spawn(self, protocol: ProcessProtocol, argv: list[str], env: dict[str, str],
              path: str | None) -> LaunchedProcess:
        """Start ``argv`` in ``path`` (its own session and group); returns at
        once, the pid follows (``LaunchedProcess.started``)."""
        control = self._ensure()
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self._ids += 1
        process = LaunchedProcess(self, self._ids, protocol, stdin_w)
        process._readers = [PipeReader(self.reactor, out_r,
                                       lambda data: protocol.childDataReceived(1, data)),
                            PipeReader(self.reactor, err_r,
                                       lambda data: protocol.childDataReceived(2, data))]
        self._waiting[process.ident] = process
        protocol.makeConnection(process)  # type: ignore[arg-type]
        control.send(json.dumps({"op": "spawn", "id": process.ident, "argv": argv, "env": env,
                                 "cwd": path, "low": self.low_priority}).encode(),
                     [stdin_r, out_w, err_w])
        return process

    def settle(self, process: LaunchedProcess) -> None:
        """Learn ``process``'s pid now if the launcher already sent it (a
        program may connect before the reactor read the answer); bounded."""
        if self._control is not None and process.pid is None and not process.exited:
            self._control.read_now(SETTLE_WAIT)

    def stop(self) -> "defer.Deferred[None]":
        """Close the launcher (it ends what is left and exits); fires once it did."""
        self.closed = True
        protocol, control = self._protocol, self._control
        if control is None or protocol is None:
            return defer.succeed(None)
        control.sock.shutdown(socket.SHUT_WR)  # EOF for the launcher; answers still read
        return protocol.ended
