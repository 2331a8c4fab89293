"""Node program instances: one Unix socket and one process group each.

An instance's life: listen on its socket, wait for a spawn slot
(:mod:`libchat.runtimes.spawning`), spawn (:mod:`.command`), wait for the
program to connect within ``start_timeout``, exchange events, and end: by
itself, by its socket closing, or stopped (:mod:`.process`). The socket and
the stdout/stderr pipes (:mod:`.program_io`) report to the instance through
:class:`~libchat.runtimes.node.program_io.IChannelOwner`.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.core.library import ProgramLibrary
from libchat.interfaces import IInstanceOwner
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC, encode_event
from libchat.runtimes.node.command import NODE_SDK_DIR, ApiAddress, NodeCommand
from libchat.runtimes.node.process import Supervisor, exit_detail
from libchat.runtimes.node.program_io import (ChildProtocol, IChannelOwner, ProgramChannel,
                                              ProgramConnection, pgid)
from libchat.runtimes.node.reaper import make_runtime_dir
from libchat.runtimes.node.spawner import LauncherClient, LaunchedProcess
from libchat.runtimes.spawning import SpawnGate
from libchat.runtimes.warmable import InstanceState, IWarmableRuntime, IWarmInstance

__all__ = ["NODE_SDK_DIR", "NodeInstance", "NodeRuntime"]

DRAIN_AT_EXIT = 1.0  # seconds to read what an exited program left in its socket

STARTING, RUNNING, EXITED = InstanceState.STARTING, InstanceState.RUNNING, InstanceState.EXITED


@implementer(IWarmInstance, IChannelOwner)
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
        self.state = STARTING
        self.stopping = False
        self.socket_path = runtime.runtime_dir / f"{instance_id}.sock"
        self.channel = ProgramChannel(self, self.socket_path, runtime.magic, runtime.max_frame,
                                      runtime.max_backlog, runtime.ports_closing)
        self.process = Supervisor(runtime.reactor, runtime.kill_grace, self._sigkill)
        self._timers: list[IDelayedCall] = []
        self._ever_connected = False
        self._exit_detail: str | None = None  # exited; its socket is being drained
        self._gone: list[defer.Deferred[None]] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def connection(self) -> ProgramConnection | None:
        return self.channel.connection

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
        # the socket is made when the runtime's gate grants a spawn slot
        # (bounded concurrency, one spawn per reactor turn: see
        # libchat/runtimes/spawning.py), not at once: bind + chmod + listen
        # cost ~1 ms of the reactor each, and a storm of 100 new dialogs
        # arriving in one read would otherwise pay all of them in one turn
        self.runtime.gate.request(
            self, lambda: self._listen(program.directory, program.entry), urgent)

    def _listen(self, directory: Path, entry: Path) -> None:
        if self.state is EXITED:  # stopped while waiting for the gate
            return
        d = self.channel.listen(self.runtime.reactor)
        d.addCallbacks(lambda port: self._listening(port, directory, entry),
                       lambda f: self._fail(f"cannot listen on {self.socket_path}: "
                                            f"{f.getErrorMessage()}"))

    def _listening(self, port: IListeningPort, directory: Path, entry: Path) -> None:
        if self.state is not EXITED:  # else: stopped while listening (port closed)
            self._spawn(directory, entry)

    def _spawn(self, directory: Path, entry: Path) -> None:
        if self.state is EXITED:  # stopped while waiting for the gate
            return
        rt = self.runtime
        cmd = rt.command.build(directory, entry, self.socket_path, self.token, self.dialog_id,
                               rt.api_address())
        try:
            if rt.launcher is not None:  # off the reactor: libchat/runtimes/node/launcher.py
                launched = self.process.launch(rt.launcher, ChildProtocol(self), cmd.argv,
                                               cmd.env, cmd.path)
                launched.started.addCallbacks(
                    lambda _: self._started(),
                    lambda f: self._fail(f"cannot spawn {cmd.argv[0]}: {f.getErrorMessage()}"))
            else:
                self.process.spawn(ChildProtocol(self), cmd.argv, cmd.env, cmd.path)
                self._started()
        except Exception as e:
            self._fail(f"cannot spawn {cmd.argv[0]}: {e}")
            return
        self._later(rt.start_timeout, self._start_expired)

    def _started(self) -> None:
        self.log.info("started {program} for {dialog_id} as pid {pid} ({instance_id})",
                      program=self.program, dialog_id=self.dialog_id or "(warm)", pid=self.pid,
                      instance_id=self.instance_id)

    def _start_expired(self) -> None:
        if not self._ever_connected and self.state is not EXITED:
            self.log.warn("{program} for {dialog_id} did not connect within {seconds}s",
                          program=self.program, dialog_id=self.dialog_id,
                          seconds=self.runtime.start_timeout)
            self.stop()

    def _fail(self, detail: str) -> None:
        """Could not even start: report it as a failed start, asynchronously."""
        self.log.error("instance {instance_id} failed: {detail}",
                       instance_id=self.instance_id, detail=detail)
        self.runtime.reactor.callLater(0, self._finish, detail)

    # -- IChannelOwner: the socket and the process -----------------------------

    def peerAllowed(self, pid: int | None) -> bool:
        """Only the instance's own process (or one of its process group) may
        connect: a same-user foreign process that found the socket is refused
        and the instance is unaffected."""
        launched = self.process.process
        if self.pid is None and isinstance(launched, LaunchedProcess):
            launched.client.settle(launched)  # connected before we read its pid
        ok = pid is not None and self.pid is not None and (
            pid == self.pid or pgid(pid) == self.pid)
        if not ok:
            self.log.warn("refusing a connection to instance {instance_id} from pid {peer} "
                          "(not its process group {pid})", instance_id=self.instance_id,
                          peer=pid, pid=self.pid)
        return ok

    def channelConnected(self, connection: ProgramConnection) -> None:
        self._ever_connected = True
        self.state = RUNNING
        self.runtime.gate.release(self)
        if isinstance(self.process.process, LaunchedProcess):
            self.process.process.booted()  # booted at idle priority: back to normal
        self.channel.attach(connection, paused=self.runtime.events_paused)
        self.owner.instanceConnected(self)

    def channelEvent(self, event: dict[str, Any]) -> None:
        self.owner.instanceEvent(self, event)

    def channelLost(self, connection: ProgramConnection) -> None:
        if not self.channel.detach(connection):
            return
        if self._exit_detail is not None:  # the process is gone; socket drained
            self._finish(self._exit_detail)
        elif self.state is not EXITED and not self.stopping:
            self.log.info("{program} of {dialog_id} closed its socket; stopping it",
                          program=self.program, dialog_id=self.dialog_id)
            self.stop(drain=min(1.0, self.runtime.kill_grace))

    def processExited(self, reason: Failure) -> None:
        detail = exit_detail(reason)
        self.process.ended()  # the group outlives its leader: take the grandchildren too
        if self.channel.connection is not None and self.state is not EXITED:
            # what the program wrote just before exiting may still wait in
            # its socket: read it to the end first (bounded: a grandchild
            # could hold the socket open)
            self._exit_detail = detail
            self._later(DRAIN_AT_EXIT, self._finish, detail)
            return
        self._finish(detail)

    # -- IInstance -----------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        """Queue an event for the program. A program that does not read (or
        has not connected yet) may hold at most ``runtime.max_backlog`` unread
        bytes; past that the instance is stopped (the dialog gets 2002
        ``program_exited``), so it cannot make libchat buffer without bound."""
        if self.state is EXITED or (self.state is RUNNING and self.connection is None):
            return  # gone, or its socket closed: dropped
        unread = self.channel.write(encode_event(event, self.runtime.magic))
        if unread is not None and not self.stopping:
            self.log.warn("{program} of {dialog_id} is not reading its socket ({unread} bytes "
                          "unread); stopping it", program=self.program,
                          dialog_id=self.dialog_id, unread=unread)
            self.channel.drop_queue()
            self.stop()

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        if self.state is EXITED:
            d.callback(None)
            return d
        self._gone.append(d)
        if self.stopping:
            return d
        self.stopping = True
        if self.process.process is None:  # never spawned
            self.channel.close()
            self._finish("stopped before start")
            return d
        self.process.terminate(drain)
        return d

    # -- ending ---------------------------------------------------------------

    def _sigkill(self) -> None:
        self.log.warn("{program} of {dialog_id} ignored SIGTERM; sending SIGKILL",
                      program=self.program, dialog_id=self.dialog_id)

    def _later(self, seconds: float, f: Callable[..., Any], *args: Any) -> None:
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.runtime.reactor.callLater(seconds, f, *args))

    def _finish(self, detail: str) -> None:
        if self.state is EXITED:
            return
        self.state = EXITED
        for t in self._timers:
            if t.active():
                t.cancel()
        self._timers = []
        self.process.cancel()
        self.channel.close()
        self.runtime.gate.release(self)
        self.runtime._forget(self)
        try:
            self.owner.instanceGone(self, self._ever_connected, detail)
        finally:
            gone, self._gone = self._gone, []
            for d in gone:
                d.callback(None)


@implementer(IWarmableRuntime)
class NodeRuntime:
    """Starts ``node programs/<name>/<name>.js --socket=... --port=...``.

    ``api_address`` returns the memory API's bound address (its listening
    port's ``getHost()``, or None while it is not listening), read at each
    spawn so that ``--api tcp:0`` and UNIX listeners reach programs as bound.
    """

    log = Logger()

    def __init__(self, reactor: Any, library: ProgramLibrary, *,
                 api_address: Callable[[], Any] = lambda: None, node: str = "node",
                 runtime_base: str | None = None, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME, start_timeout: float = 10.0,
                 kill_grace: float = 5.0, base_env: dict[str, str] | None = None,
                 spawn_concurrency: int = 4, max_backlog: int | None = None,
                 make_dir: Callable[[], Path] | None = None, launcher: bool | None = None,
                 low_priority_boot: bool = True) -> None:
        self.reactor = reactor
        self.library = library
        self._api_address = api_address
        self.runtime_base = runtime_base
        self._runtime_dir: Path | None = None
        self.magic = magic
        self.max_frame = max_frame
        self.start_timeout = start_timeout
        self.kill_grace = kill_grace
        if launcher is None:
            # the benchmark's comparisons (docs/performance.md): LIBCHAT_SPAWN=reactor
            # spawns as before issue 14; =launcher-normal boots at normal priority
            mode = os.environ.get("LIBCHAT_SPAWN", "launcher")
            launcher = mode != "reactor"
            low_priority_boot = low_priority_boot and mode != "launcher-normal"
        # spawning off the reactor thread (issue 14): libchat/runtimes/node/launcher.py
        self.launcher = (LauncherClient(reactor, kill_grace, low_priority=low_priority_boot)
                         if launcher else None)
        self.command = NodeCommand(node, dict(os.environ if base_env is None else base_env),
                                   magic, max_frame, wrap=not launcher)
        self._ids = itertools.count(1)
        self._live: dict[str, NodeInstance] = {}
        # unread bytes a program may leave before it is stopped: one frame of
        # the largest size always fits
        self.max_backlog = max_backlog if max_backlog is not None else max_frame + 1024 * 1024
        self.events_paused = False
        self.ports_closing: set[defer.Deferred[Any]] = set()
        self._make_dir = make_dir
        self.gate = SpawnGate(reactor, spawn_concurrency)

    def api_address(self) -> ApiAddress:
        return ApiAddress.of(self._api_address())

    @property
    def runtime_dir(self) -> Path:
        """Made on first use, so a server that never starts a program (or
        fails to start at all) leaves no directory behind."""
        if self._runtime_dir is None:
            # make_dir: libchat.runtimes.node.reaper's run directory (lock + run marker)
            self._runtime_dir = (self._make_dir() if self._make_dir is not None
                                 else make_runtime_dir(self.runtime_base))
        return self._runtime_dir

    # -- IRuntime / IWarmableRuntime ----------------------------------------------

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> NodeInstance:
        """A new process for a dialog (the warm pool, when there is one, wraps
        this runtime and hands out pre-started instances first)."""
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
        """Every instance is a local process: all count against --max-programs."""
        return True

    def pauseEvents(self) -> None:
        """Stop reading every program socket (router backpressure): programs
        block on their own socket, nothing is lost."""
        self._set_reading(paused=True)

    def resumeEvents(self) -> None:
        self._set_reading(paused=False)

    def _set_reading(self, paused: bool) -> None:
        self.events_paused = paused
        for instance in self._live.values():
            instance.channel.reading(not paused)

    def stopAll(self) -> "defer.Deferred[Any]":
        """Stop every instance; the run directory is removed once their
        sockets are closed (so Twisted's unlink finds them)."""
        self.gate.close()
        d = defer.DeferredList([i.stop() for i in list(self._live.values())],
                               consumeErrors=True)
        d.addBoth(lambda _: defer.DeferredList(list(self.ports_closing), consumeErrors=True))
        d.addBoth(lambda _: self._cleanup())
        if self.launcher is not None:
            launcher = self.launcher
            d.addBoth(lambda _: launcher.stop())
        return d

    def _cleanup(self) -> None:
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None
