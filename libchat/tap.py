"""``twistd libchat``: the options of CONTRACT section 7 and the service tree.

This is the only module that knows every piece; everything else receives its
collaborators (reactor included) through its constructor. The services are
Twisted's own: listeners are :class:`StreamServerEndpointService` (they listen
in ``privilegedStartService``, so ``twistd --uid`` can bind a privileged port
first), the flush is a :class:`TimerService`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import defer, endpoints, task, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python import usage

from libchat import config
from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.doors.frame import FrontFactory
from libchat.doors.http import bounded_site
from libchat.doors.memory_api import MAX_BODY, MemoryAPI
from libchat.doors.web import app as web
from libchat.doors.web.auth import MIN_SECRET, read_secret
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC
from libchat.runtimes.node.reaper import RunDir, Watchdog
from libchat.runtimes.node.runner import MAX_RUNTIME_BASE, NodeRuntime
from libchat.runtimes.pool import WarmPool
from libchat.storage.store import JsonFileStore

DEFAULT_FRONT = "tcp:8082:interface=127.0.0.1"
DEFAULT_API = "tcp:8083:interface=127.0.0.1"
DEFAULT_WEB = "tcp:8080:interface=127.0.0.1"


class StartupError(Exception):
    """libchat cannot start; the message is one line saying what to change."""


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
        ["config", None, None, "TOML file of options and tables (docs/configuration.md); "
         "the command line wins over it."],
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
        self.given: set[str] = set()  # the options named on the command line
        self.tables: dict[str, Any] = {}  # the config file's tables (libchat.config)
        # note each option the command line sets, so the config file never
        # overrides one (usage.Options has no public hook for this)
        wrapped: set[int] = set()
        for handler in self._dispatch.values():
            if isinstance(handler, usage.CoerceParameter) and id(handler) not in wrapped:
                wrapped.add(id(handler))
                handler.dispatch = self._noting(handler.dispatch)  # type: ignore[method-assign]

    def _noting(self, dispatch: Callable[[str, str], None]) -> Callable[[str, str], None]:
        def noted(name: str, value: str) -> None:
            self.given.add(name)
            dispatch(name, value)
        return noted

    def opt_front(self, endpoint: str) -> None:
        """Front-service endpoint (repeatable). Default: tcp:8082:interface=127.0.0.1"""
        self.given.add("front")
        self["front"].append(endpoint)

    def postOptions(self) -> None:
        secret: bytes | None = None
        if self["config"] is not None:
            secret = self._apply(config.load(self["config"], top_table()))
        if not self["front"]:
            self["front"] = [DEFAULT_FRONT]
        base = self["runtime-dir"]
        if base is not None and len(os.fsencode(base)) > MAX_RUNTIME_BASE:
            raise usage.UsageError(f"--runtime-dir must be at most {MAX_RUNTIME_BASE} bytes "
                                   "(Unix socket paths are limited to 108)")
        for directory in self["programs"].split(os.pathsep):
            check_programs_dir(directory)
        try:
            self["secret"] = secret or read_secret(self["auth-secret"], self["auth-secret-file"])
        except (OSError, ValueError) as e:
            raise usage.UsageError(str(e)) from None

    def _apply(self, found: config.Config) -> bytes | None:
        """Take the file's values for what the command line left unset; the
        file's JWT secret (none if the command line names one)."""
        secret = None
        for name, value in found.top.items():
            if name == "auth-secret":
                if not self.given & {"auth-secret", "auth-secret-file"}:
                    secret = value.reveal().encode("utf-8")
            elif name not in self.given:
                self[name] = value
        self.tables = found.tables
        return secret


class TwistdOptions(Options):
    """The options as twistd parses them: a bad value is one line on stderr
    and exit status 2, not twistd's whole usage text; a :class:`StartupError`
    later (a busy port) is one line too."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            write_line(f"libchat: {e} (see twistd libchat --help)")
            raise SystemExit(2) from None
        sys.excepthook = one_line_startup_errors(sys.excepthook)


def write_line(line: str) -> None:
    # twistd redirects sys.stderr into its log once logging begins
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()


def one_line_startup_errors(hook: Any) -> Any:
    def excepthook(kind: type[BaseException], value: BaseException,
                   tb: TracebackType | None) -> None:
        if isinstance(value, StartupError):
            write_line(str(value))
        else:
            hook(kind, value, tb)
    return excepthook


def check_programs_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise usage.UsageError(f"--programs: {directory} {what}; create it or choose "
                               "another with --programs")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise usage.UsageError(f"--programs: cannot read {directory} (permission denied); "
                               "fix its permissions or choose another with --programs")


def top_table() -> config.Table:
    """The config file's top level: every option under its long name."""
    keys = [config.Key("front", kind=(list, str), items=str,
                       coerce=lambda v: [v] if isinstance(v, str) else list(v),
                       default=[DEFAULT_FRONT], help="Front-service endpoints.")]
    for name, _short, default, doc, *coerce in Options.optParameters:
        if name in ("config", "auth-secret-file"):
            continue  # auth-secret-file is the secret's _file form below
        if name == "auth-secret":
            keys.append(config.Key(name, secret=True, help=doc))
            continue
        kind: Any = ((int, str) if name == "magic" else float if isinstance(default, float)
                     else int if isinstance(default, int) else str)
        check = coerce[0] if coerce else None
        keys.append(config.Key(name, kind=kind, default=default, help=doc,
                               coerce=(lambda v, c=check: c(str(v))) if check else None))
    return config.Table("", keys=tuple(keys))


def describe(address: Any) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    return str(getattr(address, "name", address))


class Listener(StreamServerEndpointService):
    """A listening door: logs a readiness line naming the bound address, and
    turns a failure to listen into one :class:`StartupError` line naming the
    option to change (so twistd exits at once instead of running without a door)."""

    log = Logger()
    _raiseSynchronously = True

    def __init__(self, role: str, option: str, description: str,
                 endpoint: IStreamServerEndpoint, factory: Factory) -> None:
        super().__init__(endpoint, factory)
        self.role, self.option, self.description = role, option, description
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise self._refuse(reason.lower()) from None
        except Exception as e:  # noqa: BLE001 - any endpoint may fail its own way
            raise self._refuse(str(e) or type(e).__name__) from None
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)

    def _refuse(self, reason: str) -> StartupError:
        line = (f"libchat: cannot listen on {self.description} for --{self.option}: "
                f"{reason}; choose another with --{self.option}")
        self.log.critical("{line}", line=line)
        return StartupError(line)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info("libchat {role} listening on {address}", role=self.role,
                      address=describe(port.getHost()))
        return port

    def stopService(self) -> "defer.Deferred[None]":
        self.port = None
        return super().stopService()


class FlushService(TimerService):
    """Writes changed dialogs every interval, and once more at stop.

    A LoopingCall stops forever when its callable fails, so failures are
    logged and swallowed here: one bad flush must not end persistence.
    """

    log = Logger()

    def __init__(self, store: JsonFileStore, interval: float, clock: Any) -> None:
        super().__init__(interval, self._flush)
        self.store = store
        self.clock = clock

    def _flush(self) -> "defer.Deferred[Any]":
        d = defer.maybeDeferred(self.store.flush)
        d.addErrback(lambda f: self.log.failure("flushing dialogs failed", f))
        return d

    def stopService(self) -> "defer.Deferred[Any]":
        d = super().stopService()  # waits for a flush under way
        d.addCallback(lambda _: self._flush())
        return d


class LibchatService(service.MultiService):
    """The whole server. Starts the router before the doors open. Stops in
    order: the doors stop listening; the programs stop (their close hooks can
    still reach the memory API); the memory API stops; the last flush."""

    log = Logger()

    def __init__(self, router: Router, store: JsonFileStore, runtime: NodeRuntime) -> None:
        super().__init__()
        self.router = router
        self.store = store
        self.runtime = runtime
        self.watchdog: Watchdog | None = None  # outlives the programs (libchat.runtimes.node.reaper)

    def listening(self, role: str) -> list[Listener]:
        """The listening child services of a role ('front', 'api', ...)."""
        return [s for s in self if isinstance(s, Listener) and s.role == role]

    def startService(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()
        self.router.start()
        super().startService()
        self.log.info("libchat ready")

    def _stop(self, which: Callable[[service.IService], bool]) -> "defer.Deferred[Any]":
        children = [s for s in reversed(list(self)) if which(s) and s.running]
        return defer.DeferredList([defer.maybeDeferred(s.stopService) for s in children],
                                  consumeErrors=True)

    def stopService(self) -> "defer.Deferred[Any]":
        service.Service.stopService(self)

        def door(s: Any) -> bool:
            return isinstance(s, Listener) and s.role != "api"

        def api(s: Any) -> bool:
            return isinstance(s, Listener) and s.role == "api"

        def programs(s: Any) -> bool:
            return not isinstance(s, (Listener, FlushService))

        d = self._stop(door)
        d.addBoth(lambda _: self._stop(programs))
        d.addBoth(lambda _: self.router.stop())
        d.addErrback(lambda f: self.log.failure("stopping the programs failed", f))
        d.addBoth(lambda _: self._stop(api))
        d.addBoth(lambda _: self._stop(lambda s: isinstance(s, FlushService)))
        d.addBoth(lambda _: self.watchdog.stop() if self.watchdog is not None else None)
        d.addBoth(lambda _: self.log.info("libchat stopped"))
        return d


def listener(reactor: Any, role: str, option: str, description: str,
             factory: Factory) -> Listener:
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        raise StartupError(f"libchat: --{option} {description!r} is not a Twisted endpoint "
                           f"({e}); e.g. tcp:8082:interface=127.0.0.1") from None
    return Listener(role, option, description, endpoint, factory)


def makeService(options: Options, reactor: Any = None) -> LibchatService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor

    def run_io(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    store = JsonFileStore(Path(options["data"]), run_io=run_io,
                          pause=lambda: task.deferLater(reactor, 0, lambda: None))
    library = ProgramLibrary([Path(p) for p in options["programs"].split(os.pathsep) if p])

    def api_port() -> int:
        port = api.port
        return getattr(port.getHost(), "port", 0) if port is not None else 0

    run = RunDir.prepare(options["runtime-dir"])  # also removes what dead runs left
    runtime = NodeRuntime(
        reactor, library, api_port=api_port, node=options["node"],
        runtime_base=options["runtime-dir"], base_env=run.env(), make_dir=run.create,
        magic=options["magic"], max_frame=options["max-frame"],
        start_timeout=options["start-timeout"], kill_grace=options["kill-grace"],
        spawn_concurrency=options["spawn-concurrency"],
    )
    router = Router(
        reactor, library, runtime, store,
        idle_timeout=options["idle-timeout"], max_programs=options["max-programs"],
        kill_grace=options["kill-grace"], background_limit=options["background-limit"],
    )
    top = LibchatService(router, store, runtime)
    top.watchdog = Watchdog(reactor, run, options["kill-grace"])
    library.rescanner(reactor).setServiceParent(top)  # scans at start, then every 5 s
    # the warm pool (libchat/pool.py) starts filling once the service runs
    # (never before twistd daemonizes), and counts against --max-programs
    runtime.pool = WarmPool(runtime, library, reactor, default_size=options["warm"],
                            max_instances=options["max-programs"])
    runtime.pool.setServiceParent(top)
    memory = MemoryAPI(router, store, reactor.seconds)
    api = listener(reactor, "api", "api", options["api"],
                   bounded_site(memory.app.resource(), MAX_BODY))
    api.setServiceParent(top)
    front_factory = FrontFactory(router, magic=options["magic"], max_frame=options["max-frame"],
                                 frame_timeout=options["frame-timeout"], clock=reactor)
    for description in options["front"]:
        listener(reactor, "front", "front", description, front_factory).setServiceParent(top)
    FlushService(store, options["flush-interval"], reactor).setServiceParent(top)
    make_web_service(options, reactor, router).setServiceParent(top)
    return top


def make_web_service(options: Options, reactor: Any, router: Router) -> Listener:
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
    # REST bodies are bounded like frames (libchat.doors.web.rest)
    return listener(reactor, "web", "web", options["web"],
                    bounded_site(site.resource(), options["max-frame"]))
