"""``twistd libchat``: the options of CONTRACT section 7 and the service tree.

This is the only module that knows every piece; everything else receives its
collaborators (reactor included) through its constructor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, endpoints, task, threads
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from libchat.doors.frame import FrontFactory
from libchat.core.library import ProgramLibrary
from libchat.doors.memory_api import MemoryAPI
from libchat.runtimes.pool import WarmPool
from libchat.runtimes.node.reaper import MAX_RUNTIME_BASE, RunDir, Watchdog
from libchat.core.router import Router
from libchat.runtimes.node.runner import NodeRuntime
from libchat.runtimes.switch import RuntimeSwitch
from libchat.storage.store import JsonFileStore
from libchat.doors.web import app as web
from libchat.doors.web.auth import MIN_SECRET, read_secret
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC

DEFAULT_FRONT = "tcp:8082:interface=127.0.0.1"
DEFAULT_API = "tcp:8083:interface=127.0.0.1"
DEFAULT_WEB = "tcp:8080:interface=127.0.0.1"


def _positive(kind: Callable[[str], Any], name: str, minimum: float = 0) -> Callable[[str], Any]:
    def coerce(value: str) -> Any:
        try:
            v = kind(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
        if v < minimum:
            raise usage.UsageError(f"--{name} must be at least {minimum}")
        return v
    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def _magic(value: str) -> int:
    try:
        v = int(value, 0)
    except ValueError:
        raise usage.UsageError(f"--magic must be an integer (decimal or 0x hex), "
                               f"not {value!r}") from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise usage.UsageError("--magic must fit in 32 bits")
    return v


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run libchat: a chat router that binds each dialog to its own "
                "Node.js tool program. Endpoints are Twisted endpoint strings.")

    optParameters = [
        ["api", None, DEFAULT_API, "Memory API endpoint (for programs)."],
        ["programs", None, "./programs", "Program library directory (several: "
         "separate them with ':'; the first holding a name wins)."],
        ["data", None, "./data", "Directory of <dialog_id>.json files."],
        ["node", None, "node", "Node.js executable."],
        ["idle-timeout", None, 3600.0, "Seconds without a user message before a "
         "foreground program is stopped.", _positive(float, "idle-timeout", 0.001)],
        ["flush-interval", None, 5.0, "Seconds between writes of changed dialogs.",
         _positive(float, "flush-interval", 0.001)],
        ["max-programs", None, 256, "Live instances at most (foreground and background).",
         _positive(int, "max-programs", 1)],
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame body in bytes.",
         _positive(int, "max-frame", 1)],
        ["start-timeout", None, 10.0, "Seconds a program has to connect to its socket.",
         _positive(float, "start-timeout", 0.001)],
        ["kill-grace", None, 5.0, "Seconds between SIGTERM and SIGKILL.",
         _positive(float, "kill-grace", 0)],
        ["magic", None, MAGIC, "Frame magic number (decimal or 0x hex).", _magic],
        ["background-limit", None, 3600.0, "Seconds a program may keep running in the "
         "background after its 2002 (0: no limit).", _positive(float, "background-limit", 0)],
        ["frame-timeout", None, 30.0, "Seconds a front connection may leave a frame "
         "incomplete before it is closed (0: never).", _positive(float, "frame-timeout", 0)],
        ["warm", None, 0, "Instances per program started ahead of need (a program's "
         'package.json "libchat": {"warm": N} overrides it).', _positive(int, "warm", 0)],
        ["spawn-concurrency", None, 4, "Program instances booting at once at most; "
         "more wait their turn so a spawn storm never stalls routing (0: no limit).",
         _positive(int, "spawn-concurrency", 0)],
        ["runtime-dir", None, None, "Parent of the private socket directory "
         "(default $XDG_RUNTIME_DIR or /tmp)."],
        # the web front doors (CONTRACT section 8; libchat.doors.web, docs/web.md)
        ["web", None, DEFAULT_WEB, "Web endpoint: page, /ws, REST API, /metrics, /healthz."],
        ["auth-secret", None, None, "HS256 secret for user JWTs (none: development mode)."],
        ["auth-secret-file", None, None, "File holding the JWT secret."],
        ["ws-rate", None, 20.0, "Messages per second one WebSocket (or REST user) may send.",
         _positive(float, "ws-rate", 0.001)],
        ["ws-max-per-user", None, 16, "Open WebSockets per user at most.",
         _positive(int, "ws-max-per-user", 1)],
        # autobahn's timers have a resolution of one second
        ["ws-ping", None, 25.0, "Seconds between WebSocket pings.",
         _positive(float, "ws-ping", 1)],
        ["ws-pong", None, 10.0, "Seconds a WebSocket has to answer a ping.",
         _positive(float, "ws-pong", 1)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["front"] = []

    def opt_front(self, endpoint: str) -> None:
        """Front-service endpoint (repeatable). Default: tcp:8082:interface=127.0.0.1"""
        self["front"].append(endpoint)

    def postOptions(self) -> None:
        if not self["front"]:
            self["front"] = [DEFAULT_FRONT]
        base = self["runtime-dir"]
        if base is not None and len(os.fsencode(base)) > MAX_RUNTIME_BASE:
            raise usage.UsageError(f"--runtime-dir must be at most {MAX_RUNTIME_BASE} bytes "
                                   "(Unix socket paths are limited to 108)")
        try:
            self["secret"] = read_secret(self["auth-secret"], self["auth-secret-file"])
        except (OSError, ValueError) as e:
            raise usage.UsageError(str(e)) from None


def describe(address: Any) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    return str(getattr(address, "name", address))


class ListeningService(service.Service):
    """Listens on an endpoint; logs a readiness line naming the bound address.

    A failure to listen raises from ``startService`` so twistd exits at once
    instead of running without a door.
    """

    log = Logger()

    def __init__(self, role: str, endpoint: IStreamServerEndpoint, factory: Factory) -> None:
        self.role = role
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self.ready: defer.Deferred[IListeningPort] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        failures: list[Any] = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failures.append)
        if failures:
            self.ready.errback(failures[0])
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self.log.info("libchat {role} listening on {address}", role=self.role,
                      address=describe(port.getHost()))
        self.ready.callback(port)

    def stopService(self) -> "defer.Deferred[Any] | None":
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None


class FlushService(service.Service):
    """Writes changed dialogs every interval, and once more at stop.

    A LoopingCall stops forever when its callable fails, so failures are
    logged and swallowed here: one bad flush must not end persistence.
    """

    log = Logger()

    def __init__(self, store: JsonFileStore, interval: float, clock: Any) -> None:
        self.store = store
        self.loop = LoopingCall(self._flush)
        self.loop.clock = clock
        self.interval = interval

    def _flush(self) -> "defer.Deferred[Any]":
        d = self.store.flush()
        d.addErrback(lambda f: self.log.failure("flushing dialogs failed", f))
        return d

    def startService(self) -> None:
        super().startService()
        self.loop.start(self.interval, now=False)

    def stopService(self) -> "defer.Deferred[Any]":
        super().stopService()
        if self.loop.running:
            self.loop.stop()
        return self._flush()


class LibchatService(service.MultiService):
    """The whole server. Starts the router before the doors open; at stop,
    closes the doors, stops every program instance, and flushes."""

    log = Logger()

    def __init__(self, router: Router, store: JsonFileStore, runtime: NodeRuntime) -> None:
        super().__init__()
        self.router = router
        self.store = store
        self.runtime = runtime
        self.watchdog: Watchdog | None = None  # outlives the programs (libchat.runtimes.node.reaper)

    def listening(self, role: str) -> list["ListeningService"]:
        """The listening child services of a role ('front', 'api', ...)."""
        return [s for s in self if isinstance(s, ListeningService) and s.role == role]

    def startService(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()
        self.router.start()
        super().startService()
        self.log.info("libchat ready")

    def stopService(self) -> "defer.Deferred[Any]":
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self.router.stop())
        d.addBoth(lambda _: self.watchdog.stop() if self.watchdog is not None else None)
        d.addBoth(lambda _: self.log.info("libchat stopped"))
        return d


def makeService(options: Options, reactor: Any = None) -> LibchatService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor

    def run_io(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    store = JsonFileStore(Path(options["data"]), run_io=run_io,
                          pause=lambda: task.deferLater(reactor, 0, lambda: None))
    library = ProgramLibrary([Path(p) for p in options["programs"].split(os.pathsep) if p],
                             now=reactor.seconds)
    api_endpoint = endpoints.serverFromString(reactor, options["api"])

    def api_address() -> Any:  # the memory API as bound (TCP host/port, or a UNIX path)
        return api.port.getHost() if api.port is not None else None

    run = RunDir.prepare(options["runtime-dir"])  # also removes what dead runs left
    runtime = NodeRuntime(
        reactor, library, api_address=api_address, node=options["node"],
        runtime_base=options["runtime-dir"], base_env=run.env(), make_dir=run.create,
        magic=options["magic"], max_frame=options["max-frame"],
        start_timeout=options["start-timeout"], kill_grace=options["kill-grace"],
        spawn_concurrency=options["spawn-concurrency"],
    )
    # the warm pool (libchat/runtimes/pool.py) wraps the Node runtime; it
    # starts filling once the service runs (never before twistd daemonizes),
    # and counts against --max-programs
    pool = WarmPool(runtime, library, reactor, default_size=options["warm"],
                    max_instances=options["max-programs"])
    router = Router(
        reactor, library, RuntimeSwitch(library, {"node": pool}), store,
        idle_timeout=options["idle-timeout"], max_programs=options["max-programs"],
        kill_grace=options["kill-grace"], background_limit=options["background-limit"],
    )
    top = LibchatService(router, store, runtime)
    top.watchdog = Watchdog(reactor, run, options["kill-grace"])
    pool.setServiceParent(top)
    api = ListeningService("api", api_endpoint, MemoryAPI(router, store, reactor.seconds).site())
    api.setServiceParent(top)
    front_factory = FrontFactory(router, magic=options["magic"], max_frame=options["max-frame"],
                                 frame_timeout=options["frame-timeout"], clock=reactor)
    for description in options["front"]:
        ListeningService("front", endpoints.serverFromString(reactor, description),
                         front_factory).setServiceParent(top)
    FlushService(store, options["flush-interval"], reactor).setServiceParent(top)
    make_web_service(options, reactor, router).setServiceParent(top)
    return top


def make_web_service(options: Options, reactor: Any, router: Router) -> ListeningService:
    """The ``--web`` listener (libchat.doors.web)."""
    log = Logger()
    secret = options["secret"]
    if secret is None:
        log.warn("no --auth-secret: the web front doors run in DEVELOPMENT MODE and "
                 "trust X-User-Id / ?user_id= from anyone who can reach them")
    elif len(secret) < MIN_SECRET:
        log.warn("the JWT secret is shorter than {n} bytes; use a longer random one",
                 n=MIN_SECRET)
    settings = web.WebSettings(
        secret=secret, max_frame=options["max-frame"], rate=options["ws-rate"],
        max_per_user=options["ws-max-per-user"], ping=options["ws-ping"],
        pong=options["ws-pong"])
    site = web.build(router, reactor, settings)
    return ListeningService("web", endpoints.serverFromString(reactor, options["web"]),
                            Site(site.resource()))
