"""Node program instances: one Unix socket and one process group each.

Supervision follows Twisted's procmon: SIGTERM to the process group, one
``callLater`` SIGKILL timer cancelled on exit, ``ProcessExitedAlready`` and
``ESRCH`` tolerated, every timer cancelled when the instance ends. The child
is started as ``env -C <dir> setsid node ...`` so that (a) it leads its own
process group and its grandchildren die with it, and (b) Twisted may use
``posix_spawn`` instead of forking the whole server (no ``path`` argument).
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.interfaces import IInstance, IInstanceOwner, IRuntime
from libchat.core.library import ProgramLibrary
from libchat.runtimes.node.program_io import (  # noqa: F401 - re-exported for callers of runner
    MAX_RUNTIME_BASE,
    NODE_SDK_DIR,
    ChildProtocol,
    ProgramConnection,
    ProgramFactory,
    _pgid,
    make_runtime_dir,
    peer_pid,
)
from libchat.runtimes.spawning import SpawnGate
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC, encode_event

if TYPE_CHECKING:
    from libchat.runtimes.pool import WarmPool

DRAIN_AT_EXIT = 1.0  # seconds to read what an exited program left in its socket

@implementer(IInstance)
class NodeInstance:
    log = Logger()

    def __init__(self, runtime: "NodeRuntime", instance_id: str, program: str, dialog_id: str,
                 user_id: str, owner: IInstanceOwner) -> None:
        self.runtime = runtime
        self.instance_id = instance_id
        self.program = program
        self.dialog_id = dialog_id
        self.user_id = user_id
        self.owner = owner
        self.token = secrets.token_urlsafe(32)
        self.pid: int | None = None
        self.state = "starting"  # -> running -> exited
        self.stopping = False
        self.connection: ProgramConnection | None = None
        self.socket_path = runtime.runtime_dir / f"{instance_id}.sock"
        self._port: IListeningPort | None = None
        self._process: Any = None
        self._queue: list[bytes] = []
        self._timers: list[IDelayedCall] = []
        self._ever_connected = False
        self._exit_detail: str | None = None  # exited; its socket is being drained
        self._gone: list[defer.Deferred[None]] = []

    def bind(self, dialog_id: str, user_id: str, owner: IInstanceOwner) -> None:
        """Give a warm (pre-started) instance its one dialog: from now on its
        events go to ``owner`` and its log lines carry the dialog id. The
        program learns the dialog from the first frame it receives."""
        self.dialog_id, self.user_id, self.owner = dialog_id, user_id, owner
        self.log.info("warm instance {instance_id} ({program}, pid {pid}) bound to {dialog_id}",
                      instance_id=self.instance_id, program=self.program, pid=self.pid,
                      dialog_id=dialog_id)

    # -- starting ----------------------------------------------------------

    def launch(self, urgent: bool = True) -> None:
        rt = self.runtime
        program = rt.library.get(self.program)
        if program is None:
            self._fail(f"program {self.program} vanished from the library")
            return
        endpoint = UNIXServerEndpoint(rt.reactor, str(self.socket_path), mode=0o600)
        d = endpoint.listen(ProgramFactory(self))
        # spawning goes through the runtime's gate (bounded concurrency, one
        # spawn per reactor turn): see libchat/spawning.py
        d.addCallbacks(lambda port: self._listening(port, program.directory, program.entry,
                                                    urgent),
                       lambda f: self._fail(f"cannot listen on {self.socket_path}: "
                                            f"{f.getErrorMessage()}"))

    def _listening(self, port: IListeningPort, directory: Path, entry: Path,
                   urgent: bool) -> None:
        self._port = port  # kept now, so a stop while queued closes it
        if self.state == "exited":  # stopped while listening
            self._close_port()
            return
        self.runtime.gate.request(self, lambda: self._spawn(directory, entry), urgent)

    def _spawn(self, directory: Path, entry: Path) -> None:
        if self.state == "exited":  # stopped while waiting for the gate
            return
        rt = self.runtime
        argv = [rt.node, str(entry), f"--socket={self.socket_path}", f"--port={rt.api_port()}"]
        env = dict(rt.base_env)
        env.update({
            "LIBCHAT_TOKEN": self.token,
            "LIBCHAT_MAGIC": str(rt.magic),
            "LIBCHAT_MAX_FRAME": str(rt.max_frame),
            "LIBCHAT_API_HOST": rt.api_host,
            "NODE_PATH": os.pathsep.join(filter(None, [str(NODE_SDK_DIR),
                                                       rt.base_env.get("NODE_PATH")])),
        })
        if self.dialog_id:  # a warm instance has no dialog yet
            env["LIBCHAT_DIALOG_ID"] = self.dialog_id
        path: str | None = None
        if rt.env_bin and rt.setsid_bin:
            argv = [rt.env_bin, "-C", str(directory), rt.setsid_bin] + argv
        else:  # no setsid: still works, without process-group cleanup
            path = str(directory)
        try:
            self._process = rt.reactor.spawnProcess(
                ChildProtocol(self), argv[0], argv, env=env, path=path,
                childFDs={0: "w", 1: "r", 2: "r"})
        except Exception as e:
            self._fail(f"cannot spawn {argv[0]}: {e}")
            return
        self.pid = self._process.pid
        self.log.info("started {program} for {dialog_id} as pid {pid} ({instance_id})",
                      program=self.program, dialog_id=self.dialog_id or "(warm)", pid=self.pid,
                      instance_id=self.instance_id)
        self._later(rt.start_timeout, self._start_expired)

    def _start_expired(self) -> None:
        if self.connection is None and not self._ever_connected and self.state != "exited":
            self.log.warn("{program} for {dialog_id} did not connect within {seconds}s",
                          program=self.program, dialog_id=self.dialog_id,
                          seconds=self.runtime.start_timeout)
            self.stop()

    def _fail(self, detail: str) -> None:
        """Could not even start: report it as a failed start, asynchronously."""
        self.log.error("instance {instance_id} failed: {detail}",
                       instance_id=self.instance_id, detail=detail)
        self.runtime.reactor.callLater(0, self._finish, detail)

    # -- the socket --------------------------------------------------------

    def _connected(self, connection: ProgramConnection) -> None:
        self.connection = connection
        self._ever_connected = True
        self.state = "running"
        self.runtime.gate.release(self)
        self._close_port()  # nobody else may ever connect
        queued, self._queue = self._queue, []
        for frame in queued:
            connection.transport.write(frame)
        self.owner.instanceConnected(self)

    def _peer_ok(self, pid: int | None) -> bool:
        """Only the instance's own process (or one of its process group) may
        connect: a same-user foreign process that found the socket is refused
        and the instance is unaffected."""
        ok = pid is not None and self.pid is not None and (
            pid == self.pid or _pgid(pid) == self.pid)
        if not ok:
            self.log.warn("refusing a connection to instance {instance_id} from pid {peer} "
                          "(not its process group {pid})", instance_id=self.instance_id,
                          peer=pid, pid=self.pid)
        return ok

    def _event(self, event: dict[str, Any]) -> None:
        self.owner.instanceEvent(self, event)

    def _disconnected(self, connection: ProgramConnection) -> None:
        if connection is self.connection:
            self.connection = None
            if self._exit_detail is not None:  # the process is gone; socket drained
                self._finish(self._exit_detail)
            elif self.state != "exited" and not self.stopping:
                self.log.info("{program} of {dialog_id} closed its socket; stopping it",
                              program=self.program, dialog_id=self.dialog_id)
                self.stop(drain=min(1.0, self.runtime.kill_grace))

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event for the program. A program that does not read (or
        has not connected yet) may hold at most ``runtime.max_backlog`` unread
        bytes; past that the instance is stopped (the dialog gets 2002
        ``program_exited``), so it cannot make libchat buffer without bound."""
        frame = encode_event(event, self.runtime.magic)
        conn = self.connection
        if conn is not None:
            if conn.paused:
                conn.backlog += len(frame)
                if conn.backlog > self.runtime.max_backlog:
                    self._overflow(conn.backlog)
                    return
            transport: Any = conn.transport
            transport.write(frame)
        elif self.state == "starting":
            self._queue.append(frame)
            if sum(map(len, self._queue)) > self.runtime.max_backlog:
                self._overflow(sum(map(len, self._queue)))

    def _overflow(self, unread: int) -> None:
        if self.stopping:
            return
        self.log.warn("{program} of {dialog_id} is not reading its socket ({unread} bytes "
                      "unread); stopping it", program=self.program, dialog_id=self.dialog_id,
                      unread=unread)
        self._queue = []
        self.stop()

    # -- stopping ----------------------------------------------------------

    def _later(self, seconds: float, f: Callable[..., Any], *args: Any) -> None:
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.runtime.reactor.callLater(seconds, f, *args))

    def _signal(self, sig: int) -> None:
        if self.pid is None or self.state == "exited":
            return
        try:
            os.killpg(self.pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
            # the child may not have called setsid yet: signal it alone
            try:
                self._process.signalProcess("KILL" if sig == signal.SIGKILL else "TERM")
            except ProcessExitedAlready:
                pass

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        if self.state == "exited":
            d.callback(None)
            return d
        self._gone.append(d)
        if self.stopping:
            return d
        self.stopping = True
        if self._process is None:  # never spawned
            self._close_port()
            self._finish("stopped before start")
            return d
        grace = self.runtime.kill_grace
        if drain > 0:
            self._later(drain, self._signal, signal.SIGTERM)
        else:
            self._signal(signal.SIGTERM)
        self._later(max(grace, drain + 0.001), self._kill)
        return d

    def _kill(self) -> None:
        if self.state != "exited":
            self.log.warn("{program} of {dialog_id} ignored SIGTERM; sending SIGKILL",
                          program=self.program, dialog_id=self.dialog_id)
            self._signal(signal.SIGKILL)

    def _close_port(self) -> None:
        if self._port is not None:
            port, self._port = self._port, None
            port.stopListening()

    def _exited(self, reason: Failure) -> None:
        status = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        detail = f"exit code {status}" if sig is None else f"signal {sig}"
        if self.pid is not None:
            try:  # the group outlives its leader: take the grandchildren too
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.connection is not None and self.state != "exited":
            # what the program wrote just before exiting may still wait in
            # its socket: read it to the end first (bounded: a grandchild
            # could hold the socket open)
            self._exit_detail = detail
            self._later(DRAIN_AT_EXIT, self._finish, detail)
            return
        self._finish(detail)

    def _finish(self, detail: str) -> None:
        if self.state == "exited":
            return
        self.state = "exited"
        for t in self._timers:
            if t.active():
                t.cancel()
        self._timers = []
        self._queue = []
        self._close_port()
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.loseConnection()
        self.runtime.gate.release(self)
        self.runtime._forget(self)
        try:
            self.owner.instanceGone(self, self._ever_connected, detail)
        finally:
            gone, self._gone = self._gone, []
            for d in gone:
                d.callback(None)


@implementer(IRuntime)
class NodeRuntime:
    """Starts ``node programs/<name>/<name>.js --socket=... --port=...``."""

    log = Logger()

    def __init__(self, reactor: Any, library: ProgramLibrary, *, api_port: Callable[[], int],
                 api_host: str = "127.0.0.1", node: str = "node",
                 runtime_base: str | None = None, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME, start_timeout: float = 10.0,
                 kill_grace: float = 5.0, base_env: dict[str, str] | None = None,
                 spawn_concurrency: int = 4, max_backlog: int | None = None,
                 make_dir: Callable[[], Path] | None = None) -> None:
        self.reactor = reactor
        self.library = library
        self.api_port = api_port
        self.api_host = api_host
        self.node = node
        self.runtime_base = runtime_base
        self._runtime_dir: Path | None = None
        self.magic = magic
        self.max_frame = max_frame
        self.start_timeout = start_timeout
        self.kill_grace = kill_grace
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.base_env.pop("LIBCHAT_TOKEN", None)
        self.env_bin = shutil.which("env")
        self.setsid_bin = shutil.which("setsid")
        self._ids = itertools.count(1)
        self._live: dict[str, NodeInstance] = {}
        # unread bytes a program may leave before it is stopped: one frame of
        # the largest size always fits
        self.max_backlog = max_backlog if max_backlog is not None else max_frame + 1024 * 1024
        self.reading_paused = False
        self._make_dir = make_dir
        self.gate = SpawnGate(reactor, spawn_concurrency)
        self.pool: "WarmPool | None" = None  # set by tap (libchat/pool.py)

    @property
    def runtime_dir(self) -> Path:
        """Made on first use, so a server that never starts a program (or
        fails to start at all) leaves no directory behind."""
        if self._runtime_dir is None:
            # make_dir: libchat.runtimes.node.reaper's run directory (lock + run marker)
            self._runtime_dir = (self._make_dir() if self._make_dir is not None
                                 else make_runtime_dir(self.runtime_base))
        return self._runtime_dir

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> NodeInstance:
        """An instance for a dialog: a warm one when the pool has one (then
        already connected), else a new process (evicting an idle warm
        instance first if ``--max-programs`` would be exceeded)."""
        if self.pool is not None:
            warm = self.pool.take(program)
            if warm is not None:
                warm.bind(dialog_id, user_id, owner)
                return warm
            if self.pool.room() <= 0:
                self.pool.make_room(program)
        return self._launch(program, dialog_id, user_id, owner, urgent=True)

    def prestart(self, program: str, owner: IInstanceOwner) -> NodeInstance:
        """An instance with no dialog yet (for the warm pool), spawned after
        any instance a dialog waits for."""
        return self._launch(program, "", "", owner, urgent=False)

    def _launch(self, program: str, dialog_id: str, user_id: str, owner: IInstanceOwner,
                urgent: bool) -> NodeInstance:
        instance = NodeInstance(self, f"i{next(self._ids)}", program, dialog_id, user_id, owner)
        self._live[instance.instance_id] = instance
        instance.launch(urgent)
        return instance

    def _forget(self, instance: NodeInstance) -> None:
        self._live.pop(instance.instance_id, None)

    def live(self) -> list[NodeInstance]:
        return list(self._live.values())

    def counts(self, program: str) -> bool:
        return True

    def pauseEvents(self) -> None:
        self.pause_reading()

    def resumeEvents(self) -> None:
        self.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading every program socket (router backpressure)."""
        self._set_reading(paused=True)

    def resume_reading(self) -> None:
        self._set_reading(paused=False)

    def _set_reading(self, paused: bool) -> None:
        self.reading_paused = paused
        for instance in self._live.values():
            transport: Any = instance.connection and instance.connection.transport
            if transport is not None:
                transport.pauseProducing() if paused else transport.resumeProducing()

    def stopAll(self) -> "defer.Deferred[Any]":
        if self.pool is not None:
            self.pool.closed = True  # no refill while everything stops
        self.gate.close()
        stops = [i.stop() for i in list(self._live.values())]
        d = defer.DeferredList(stops, consumeErrors=True)
        d.addBoth(lambda _: self._cleanup())
        return d

    def _cleanup(self) -> None:
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

