"""The two pipes of a program instance: its Unix socket and its stdout/stderr.

:mod:`libchat.runtimes.node.runner` owns the instance's life; this module holds the
protocols it plugs into Twisted, and the socket-directory helpers.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.python.failure import Failure

from libchat.protocol.events import BadEvent, parse_program
from libchat.protocol.wire import FrameProtocol

if TYPE_CHECKING:
    from libchat.runtimes.node.runner import NodeInstance

NODE_SDK_DIR = Path(__file__).parent / "sdk"
MAX_LOG_LINE = 4096
# sun_path holds 108 bytes: base + "/libchat-XXXXXXXX" + "/i<20 digits>.sock" + NUL
MAX_RUNTIME_BASE = 108 - 1 - 17 - 27


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def make_runtime_dir(base: str | None = None) -> Path:
    """A fresh 0700 directory for sockets; short, so ``sun_path`` (108 bytes)
    never overflows whatever the dialog id."""
    base = base or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    if len(os.fsencode(base)) > MAX_RUNTIME_BASE:
        raise ValueError(f"runtime directory {base!r} is too long for Unix socket paths "
                         f"({MAX_RUNTIME_BASE} bytes at most)")
    path = Path(tempfile.mkdtemp(prefix="libchat-", dir=base))
    os.chmod(path, 0o700)
    return path


def peer_pid(transport: Any) -> int | None:
    """The pid of the process at the other end of a Unix socket (SO_PEERCRED),
    or None if it is another user's or cannot be told."""
    try:
        raw = transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid if uid == os.getuid() else None


class ProgramConnection(FrameProtocol):
    """The program's side of its socket, as seen by libchat.

    It is a push producer for its transport only to learn when the program
    stops reading: what libchat then sends is counted, and past the
    instance's backlog limit the instance is stopped (see NodeInstance.send).
    """

    instance: "NodeInstance"
    refused = False
    paused = False
    backlog = 0  # bytes written while the transport's buffer was full

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport  # a UNIX socket transport
        if not self.instance._peer_ok(peer_pid(transport)):
            self.refused = True
            transport.abortConnection()
            return
        transport.registerProducer(self, True)
        if self.instance.runtime.reading_paused:
            transport.pauseProducing()
        self.instance._connected(self)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused, self.backlog = False, 0

    def stopProducing(self) -> None:
        pass

    def frameReceived(self, event_type: int, body: bytes) -> None:
        try:
            event = parse_program(event_type, body)
        except BadEvent as e:
            self.log.warn("{program} of {dialog_id} sent a bad event: {code} {message}",
                          program=self.instance.program, dialog_id=self.instance.dialog_id,
                          code=e.code, message=e.message)
            self.sendEvent(e.event())
            return
        self.instance._event(event)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.refused:
            self.instance._disconnected(self)


class ProgramFactory(Factory):
    def __init__(self, instance: "NodeInstance") -> None:
        self.instance = instance

    def buildProtocol(self, addr: Any) -> ProgramConnection | None:
        if self.instance.connection is not None or self.instance.state == "exited":
            # one connection per instance, ever: a second one (the program
            # twice, or a foreign process) is refused
            self.instance.log.warn("refusing a second connection to instance {instance_id}",
                                   instance_id=self.instance.instance_id)
            return None
        p = ProgramConnection()
        p.instance = self.instance
        p.magic = self.instance.runtime.magic
        p.max_frame = self.instance.runtime.max_frame
        return p


class ChildProtocol(ProcessProtocol):
    """stdout/stderr into the log, tagged; exit reported to the instance."""

    def __init__(self, instance: "NodeInstance") -> None:
        self.instance = instance
        self._partial = {1: b"", 2: b""}

    def _lines(self, fd: int, data: bytes) -> None:
        buf = self._partial[fd] + data
        *lines, rest = buf.split(b"\n")
        self._partial[fd] = rest[-MAX_LOG_LINE:]
        for line in lines:
            self._log(fd, line)

    def _log(self, fd: int, line: bytes) -> None:
        inst = self.instance
        text = line[:MAX_LOG_LINE].decode("utf-8", "replace").rstrip("\r")
        emit = inst.log.info if fd == 1 else inst.log.warn
        emit("[{program} {dialog_id}] {line}", program=inst.program,
             dialog_id=inst.dialog_id or "(warm)", instance_id=inst.instance_id, stream=fd, line=text)

    def outReceived(self, data: bytes) -> None:
        self._lines(1, data)

    def errReceived(self, data: bytes) -> None:
        self._lines(2, data)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._log(fd, rest)
        self.instance._exited(reason)
