"""The two pipes of a program instance: its Unix socket and its stdout/stderr.

Both talk to their instance only through :class:`IChannelOwner`, so the
protocols can be driven (and fuzzed) with any owner. :class:`ProgramChannel`
is the instance's socket: listened on until its program connects (once,
ever), frames queued until then, unread bytes counted so a program that does
not read cannot make libchat buffer without bound.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from libchat.protocol.events import BadEvent, parse_program
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC, FrameProtocol

MAX_LOG_LINE = 4096

log = Logger()


class IChannelOwner(Interface):
    """What a program's socket and process pipes report to their instance."""

    instance_id = Attribute("str: for log lines")
    program = Attribute("str: for log lines")
    dialog_id = Attribute("str: for log lines ('' while warm)")

    def peerAllowed(pid: int | None) -> bool:
        """May the process ``pid`` (None: unknown, or another user's) have
        the instance's socket? Refused connections are closed at once."""

    def channelConnected(connection: "ProgramConnection") -> None:
        """The program connected (the first and only accepted connection)."""

    def channelEvent(event: dict[str, Any]) -> None:
        """The program sent a valid 2001/2002/2003."""

    def channelLost(connection: "ProgramConnection") -> None:
        """The accepted connection closed."""

    def processExited(reason: Failure) -> None:
        """The program's process ended (``reason`` as Twisted gives it)."""


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


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
    stops reading: what libchat then sends is counted in ``backlog`` (see
    :meth:`ProgramChannel.write`).
    """

    refused = False
    paused = False
    backlog = 0  # bytes written while the transport's buffer was full

    def __init__(self, owner: IChannelOwner, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME, accepted: Any = None) -> None:
        self.owner = owner
        self.magic = magic
        self.max_frame = max_frame
        self._accepted = accepted  # told when the peer is accepted (the factory)

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport  # a UNIX socket transport
        if not self.owner.peerAllowed(peer_pid(transport)):
            self.refused = True
            transport.abortConnection()
            return
        if self._accepted is not None:
            self._accepted()
        transport.registerProducer(self, True)
        self.owner.channelConnected(self)

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
                          program=self.owner.program, dialog_id=self.owner.dialog_id,
                          code=e.code, message=e.message)
            self.sendEvent(e.event())
            return
        self.owner.channelEvent(event)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.refused:
            self.owner.channelLost(self)


class ProgramFactory(Factory):
    """One accepted connection per instance, ever: a second one (the program
    twice, or a foreign process after it) is refused."""

    def __init__(self, owner: IChannelOwner, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.owner = owner
        self.magic = magic
        self.max_frame = max_frame
        self.taken = False

    def buildProtocol(self, addr: Any) -> ProgramConnection | None:
        if self.taken:
            log.warn("refusing a second connection to instance {instance_id}",
                     instance_id=self.owner.instance_id)
            return None
        return ProgramConnection(self.owner, self.magic, self.max_frame, self._take)

    def _take(self) -> None:
        self.taken = True


class ProgramChannel:
    """One instance's socket, from listening to closing."""

    def __init__(self, owner: IChannelOwner, path: Path, magic: int, max_frame: int,
                 max_backlog: int,
                 closing: "set[defer.Deferred[Any]] | None" = None) -> None:
        self.owner = owner
        # ports still closing (Twisted unlinks the socket file a turn after
        # stopListening): the runtime waits for them before removing the
        # run directory
        self.closing: set[defer.Deferred[Any]] = set() if closing is None else closing
        self.path = path
        self.magic = magic
        self.max_frame = max_frame
        self.max_backlog = max_backlog
        self.connection: ProgramConnection | None = None
        self.closed = False
        self._port: IListeningPort | None = None
        self._queue: list[bytes] = []
        self._queued = 0

    def listen(self, reactor: Any) -> "defer.Deferred[IListeningPort]":
        endpoint = UNIXServerEndpoint(reactor, str(self.path), mode=0o600)
        d = endpoint.listen(ProgramFactory(self.owner, self.magic, self.max_frame))

        def listening(port: IListeningPort) -> IListeningPort:
            self._port = port  # kept now, so a close while queued closes it
            if self.closed:
                self._close_port()
            return port
        return d.addCallback(listening)

    def attach(self, connection: ProgramConnection, paused: bool) -> None:
        """The program connected: nobody else may ever connect; what waited
        is written; reading starts paused if the runtime is paused."""
        self.connection = connection
        self._close_port()
        transport: Any = connection.transport
        if paused:
            transport.pauseProducing()
        queued, self._queue, self._queued = self._queue, [], 0
        for frame in queued:
            transport.write(frame)

    def detach(self, connection: ProgramConnection) -> bool:
        """True if it was the accepted connection (now gone)."""
        if connection is not self.connection:
            return False
        self.connection = None
        return True

    def write(self, frame: bytes) -> int | None:
        """Queue or write one frame. Returns the unread byte count when it
        is past ``max_backlog`` (the caller stops the instance), else None."""
        if self.closed:
            return None
        conn = self.connection
        if conn is None:
            self._queue.append(frame)
            self._queued += len(frame)
            return self._queued if self._queued > self.max_backlog else None
        if conn.paused:
            conn.backlog += len(frame)
            if conn.backlog > self.max_backlog:
                return conn.backlog
        transport: Any = conn.transport
        transport.write(frame)
        return None

    def reading(self, on: bool) -> None:
        """Read the program's socket, or stop (runtime flow control)."""
        transport: Any = self.connection and self.connection.transport
        if transport is not None:
            transport.resumeProducing() if on else transport.pauseProducing()

    def drop_queue(self) -> None:
        self._queue, self._queued = [], 0

    def close(self) -> None:
        self.closed = True
        self.drop_queue()
        self._close_port()
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.loseConnection()

    def _close_port(self) -> None:
        if self._port is not None:
            port, self._port = self._port, None
            d = defer.maybeDeferred(port.stopListening)
            d.addErrback(lambda f: f.trap(FileNotFoundError))  # the directory went first
            self.closing.add(d)
            d.addBoth(lambda _: self.closing.discard(d))


class ChildProtocol(ProcessProtocol):
    """stdout/stderr into the log, tagged; exit reported to the owner."""

    def __init__(self, owner: IChannelOwner) -> None:
        self.owner = owner
        self._partial = {1: b"", 2: b""}

    def _lines(self, fd: int, data: bytes) -> None:
        buf = self._partial[fd] + data
        *lines, rest = buf.split(b"\n")
        self._partial[fd] = rest[-MAX_LOG_LINE:]
        for line in lines:
            self._log(fd, line)

    def _log(self, fd: int, line: bytes) -> None:
        owner = self.owner
        text = line[:MAX_LOG_LINE].decode("utf-8", "replace").rstrip("\r")
        emit = log.info if fd == 1 else log.warn
        emit("[{program} {dialog_id}] {line}", program=owner.program,
             dialog_id=owner.dialog_id or "(warm)", instance_id=owner.instance_id, stream=fd,
             line=text)

    def outReceived(self, data: bytes) -> None:
        self._lines(1, data)

    def errReceived(self, data: bytes) -> None:
        self._lines(2, data)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._log(fd, rest)
        self.owner.processExited(reason)
