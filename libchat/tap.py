"""``twistd libchat``: the options of the README's options and the service tree.

This is the only module that knows every piece; everything else receives its
collaborators (reactor included) through its constructor. The services are
Twisted's own: listeners are :class:`StreamServerEndpointService` (they listen
in ``privilegedStartService``, so ``twistd --uid`` can bind a privileged port
first), the flush is a :class:`TimerService`.
"""

from __future__ import annotations

import gc
import atexit
import os
import sys
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import defer, endpoints, task, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.doors.frame import FrontFactory
from libchat.doors.http import bounded_site
from libchat.doors.memory_api import MAX_BODY, MemoryAPI
from libchat.doors.web import app as web
from libchat.doors.web.auth import MIN_SECRET
from libchat.lagprobe import from_environment as lag_probe
from libchat.options import Options, StartupError, TwistdOptions
from libchat.runtimes.operators.book import JournalBook
from libchat.runtimes.operators.runtime import OperatorRuntime
from libchat.runtimes.postoffice.runtime import PostofficeRuntime
from libchat.runtimes.agents.dify import DifyClient
from libchat.runtimes.agents.runtime import AgentRuntime
from libchat.runtimes.agents.stats import AgentStats
from libchat.runtimes.node.reaper import RunDir, Watchdog
from libchat.runtimes.node.runner import NodeRuntime
from libchat.runtimes.pool import WarmPool
from libchat.runtimes.switch import RuntimeSwitch
from libchat.storage.store import JsonFileStore

__all__ = ["Options", "TwistdOptions", "StartupError", "LibchatService", "makeService"]


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
                 endpoint: IStreamServerEndpoint, factory: IProtocolFactory) -> None:
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
        self.log.critical("libchat: cannot listen on {description} for --{option}: {reason}; "
                          "choose another with --{option}", description=self.description,
                          option=self.option, reason=reason)
        return StartupError(f"libchat: cannot listen on {self.description} for "
                            f"--{self.option}: {reason}; choose another with --{self.option}")

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info("libchat {role} listening on {address}", role=self.role,
                      address=describe(port.getHost()))
        return port

    def stopService(self) -> "defer.Deferred[None]":
        self.port = None
        return super().stopService()


def _exit_failed() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(1)


class FlushService(TimerService):
    """Writes changed dialogs every interval, and once more at stop.

    A LoopingCall stops forever when its callable fails, so failures are
    logged and swallowed here: one bad flush must not end persistence.
    """

    log = Logger()

    def __init__(self, store: Any, interval: float, clock: Any) -> None:
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


class CollectorService(TimerService):
    """Keeps the cyclic garbage collector off the long-lived data.

    Transcript entries, dialog records and memory live as long as the server
    and hold no cycles, but CPython's collector rescans them whenever the
    oldest generation grows by a quarter: with transcripts growing under load
    that cost ~10 µs of the ~25 µs the router spends per routed round trip,
    and full collections stalled the reactor for up to a second
    (``python -m bench.route``, docs/performance.md). Every ``interval``
    seconds what survived is moved to the permanent generation
    (``gc.freeze``), which collections skip. Objects frozen while alive that
    later become cyclic garbage (a closed connection's protocol and
    transport) would never be reclaimed, so every ``thaw`` seconds everything
    is unfrozen and collected once, then frozen again.
    """

    def __init__(self, interval: float = 5.0, thaw: float = 3600.0,
                 clock: Any = None) -> None:
        super().__init__(interval, self._freeze)
        if clock is not None:
            self.clock = clock
        self.thaw = thaw
        self._last_thaw: float | None = None

    def _freeze(self) -> None:
        now = self.clock.seconds() if self.clock is not None else 0.0
        if self._last_thaw is None:
            self._last_thaw = now
        elif now - self._last_thaw >= self.thaw:
            self._last_thaw = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()


class LibchatService(service.MultiService):
    """The whole server. Starts the router before the doors open. Stops in
    order: the doors stop listening; the programs stop (their close hooks can
    still reach the memory API); the memory API stops; the last flush."""

    log = Logger()

    def __init__(self, router: Any, store: Any, runtime: NodeRuntime) -> None:
        super().__init__()
        self.node: Any = None  # the ClusterNode with --redis (libchat.cluster.node)
        self.router = router
        self.store = store
        self.runtime = runtime
        self.hub: Any = None  # the post-office IHub when --postoffice is given
        self.watchdog: Watchdog | None = None  # outlives the programs (libchat.runtimes.node.reaper)

    def listening(self, role: str) -> list[Listener]:
        """The listening child services of a role ('front', 'api', ...)."""
        return [s for s in self if isinstance(s, Listener) and s.role == role]

    def startService(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()
        launcher = getattr(self.runtime, "launcher", None)
        if launcher is not None:  # libchat/runtimes/node/launcher.py, with the server
            launcher.start()
        self.router.start()
        super().startService()
        self.log.info("libchat ready")
        if self.node is not None:
            self.node.start().addErrback(self._cluster_failed)

    def _cluster_failed(self, f: Any) -> None:
        """A node that cannot join does not run on alone: one line, then twistd
        stops and exits with status 1 (after its own clean-up: the pidfile,
        the log; twistd has no exit status of its own for a stop)."""
        self.log.critical("{why}", why=f.getErrorMessage())
        atexit.register(_exit_failed)
        from twisted.internet import reactor
        if reactor.running:
            reactor.stop()

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
        if self.node is not None:
            d.addBoth(lambda _: self.node.stop())
            d.addErrback(lambda f: self.log.failure("leaving the cluster failed", f))
        d.addBoth(lambda _: self._stop(api))
        d.addBoth(lambda _: self._stop(lambda s: isinstance(s, FlushService)))
        d.addBoth(lambda _: self.watchdog.stop() if self.watchdog is not None else None)
        d.addBoth(lambda _: self.log.info("libchat stopped"))
        return d


def listener(reactor: Any, role: str, option: str, description: str,
             factory: IProtocolFactory) -> Listener:
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

    node = make_cluster(options, reactor)
    store: Any = node.store if node is not None else JsonFileStore(
        Path(options["data"]), run_io=run_io,
        pause=lambda: task.deferLater(reactor, 0, lambda: None))
    library = ProgramLibrary([Path(p) for p in options["programs"].split(os.pathsep) if p])

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
    agent_stats = AgentStats(reactor.seconds)
    hub, hub_site = make_postoffice(options, reactor, node)
    runtimes = {"node": pool, **agent_runtimes(reactor, store, agent_stats)}
    # remote programs (docs/postoffice-programs.md); lead: pass pohub's `hub` here
    runtimes["postoffice"] = PostofficeRuntime(reactor, hub)
    # human operators (docs/operators.md): the queue and assignments are journaled
    # (with --redis: kept in Redis for the cluster's one desk, libchat.cluster.desk)
    book: Any
    if node is not None:
        from libchat.cluster.opbook import RedisOperatorBook
        book = RedisOperatorBook(node.conns, node.cluster.keys, node.node_id)
    else:
        book = JournalBook(Path(options["data"]) / ".operators", run_io)
    desk = OperatorRuntime(reactor, book)
    runtimes["operators"] = desk
    switch: Any = RuntimeSwitch(library, runtimes)
    if node is not None:  # programs see only what Redis has (libchat.cluster.gate)
        from libchat.cluster.gate import GatedRuntime
        switch = GatedRuntime(switch, node.store)
    engine = Router(
        reactor, library, switch, store,
        idle_timeout=options["idle-timeout"], max_programs=options["max-programs"],
        kill_grace=options["kill-grace"], background_limit=options["background-limit"],
    )
    # a cluster node's doors call the cluster router, which wraps this one
    router: Any = node.wrap(engine) if node is not None else engine
    desk.attach(engine)  # the desk's dialogs are owned by its node: the engine has them
    # the web door's desk: the runtime; on a cluster node, the proxy that
    # reaches the desk node wherever it is (docs/scaleout.md)
    operators: Any = node.serve_desk(desk, library) if node is not None else desk
    top = LibchatService(router, store, runtime)
    top.node = node
    if node is not None and hub is not None:  # envelopes cross nodes (docs/scaleout.md)
        from libchat.cluster.postoffice import plug
        plug(hub, node, router).service(reactor).setServiceParent(top)
    desk_compaction = TimerService(60, desk.book.compact)
    desk_compaction.clock = reactor
    desk_compaction.setServiceParent(top)
    top.watchdog = Watchdog(reactor, run, options["kill-grace"])
    library.rescanner(reactor).setServiceParent(top)  # scans at start, then every 5 s
    pool.setServiceParent(top)
    probe = lag_probe(reactor)  # the benchmark's reactor stall probe (LIBCHAT_LAG_PROBE)
    if probe is not None:
        probe.setServiceParent(top)
    memory = MemoryAPI(router, store, reactor.seconds)
    api = listener(reactor, "api", "api", options["api"],
                   bounded_site(memory.app.resource(), MAX_BODY))
    api.setServiceParent(top)
    front_factory = FrontFactory(router, magic=options["magic"], max_frame=options["max-frame"],
                                 frame_timeout=options["frame-timeout"], clock=reactor)
    for description in options["front"]:
        listener(reactor, "front", "front", description, front_factory).setServiceParent(top)
    FlushService(store, options["flush-interval"], reactor).setServiceParent(top)
    CollectorService(clock=reactor).setServiceParent(top)
    hooks = make_platforms(options, reactor, router, run_io, node)
    if hooks is not None:
        hooks.setServiceParent(top)
    make_web_service(options, reactor, router, agent_stats, hooks, hub,
                     operators, node, figures=desk).setServiceParent(top)
    if hub is not None:
        top.hub = hub
        listener(reactor, "postoffice", "postoffice", options["postoffice"],
                 hub_site).setServiceParent(top)
    return top


def make_platforms(options: Options, reactor: Any, router: Any,
                   run_io: Callable[..., Any], node: Any = None) -> "PlatformService | None":
    """The WeCom and Lark apps of the config file (docs/platforms.md), if any."""
    from libchat.doors.platforms import tables
    wecom, lark = tables.apps(options.tables, options["config"] or "config file")
    if not wecom and not lark:
        return None
    from libchat.doors.platforms.door import PlatformDoor
    from libchat.doors.platforms.ledger import Ledger
    ledger = Ledger(Path(options["data"]) / ".platforms", run_io, reactor)
    extra: dict[str, Any] = {}
    outbox: Any = None
    if node is not None:  # callback ids, reply targets and the outbox in Redis
        from libchat.cluster.dedupe import RedisCallbackBook
        from libchat.cluster.outbox import RedisOutbox
        extra["callbacks"] = RedisCallbackBook(node.conns, node.cluster.keys)
        outbox = extra["outbox"] = RedisOutbox(node.conns, node.cluster.keys, node.node_id,
                                               reactor, ready=lambda: node.router.ready)
    door = PlatformDoor(router, ledger, reactor, wecom, lark, **extra)
    platforms = PlatformService(door, reactor)
    if outbox is not None:  # a dead node's outbox is sent by one survivor
        outbox.on_items = door.resume
        node.router.on_dead(outbox.adopt)
        platforms.outbox = outbox
    return platforms


class PlatformService(service.MultiService):
    """Starts the platform door's senders, compacts its ledger every minute
    and at stop (libchat.doors.platforms.ledger)."""

    outbox: Any = None  # with --redis, the RedisOutbox (libchat.cluster.outbox)

    def __init__(self, door: Any, reactor: Any) -> None:
        super().__init__()
        self.door = door
        compaction = TimerService(60, door.ledger.compact)
        compaction.clock = reactor
        compaction.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.door.start()
        if self.outbox is not None:
            self.outbox.start()

    def stopService(self) -> "defer.Deferred[Any]":
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self.door.stop())
        if self.outbox is not None:
            d.addBoth(lambda _: self.outbox.stop())
        return d


def make_postoffice(options: Options, reactor: Any, node: Any = None) -> tuple[Any, Any]:
    """The ``--postoffice`` hub (an IHub; libchat.doors.postoffice) and its
    site, or (None, None) when off."""
    if options["postoffice"] is None:
        return None, None
    from libchat.doors.postoffice import settings as postoffice
    extra: dict[str, Any] = {}
    if node is not None:  # the offline queues live in Redis
        from libchat.cluster.offline import RedisOfflineQueue
        extra["offline_queue"] = lambda bound: RedisOfflineQueue(
            node.conns, node.cluster.keys, bound, clock=reactor)
    return postoffice.build(options.tables, Path(options["data"]), reactor,
                            max_frame=options["max-frame"], **extra)


def make_coze(section: dict[str, Any], api_key: str, clock: Any) -> Any:
    """The Coze client, imported when a coze program is first found."""
    from libchat.runtimes.agents.coze import CozeClient
    return CozeClient(section, api_key, clock)


def agent_runtimes(reactor: Any, store: Any, stats: AgentStats) -> dict[str, AgentRuntime]:
    """The hosted-agent runtimes (docs/agents.md), by the name programs give."""
    return {"dify": AgentRuntime("dify", reactor, DifyClient, store, stats),
            "coze": AgentRuntime("coze", reactor, make_coze, store, stats)}


def make_cluster(options: Options, reactor: Any) -> Any:
    """The cluster node of ``--redis`` (docs/scaleout.md), or None."""
    if options["redis"] is None:
        return None
    from libchat.cluster.lease import default_node_id
    from libchat.cluster.node import ClusterNode
    return ClusterNode(reactor, options["node-id"] or default_node_id(), options["redis"],
                       options.get("redis-password"))


def make_web_service(options: Options, reactor: Any, router: Any,
                     agent_stats: AgentStats | None = None,
                     hooks: "PlatformService | None" = None, hub: Any = None,
                     desk: Any = None, node: Any = None, figures: Any = None) -> Listener:
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
    extra: dict[str, Any] = {}
    if hooks is not None:
        from libchat.doors.platforms.figures import PlatformFigures
        extra = {"hooks": hooks.door.app.resource(), "collectors": (PlatformFigures(hooks.door),)}
    site = web.build(router, reactor, settings, agents=agent_stats, postoffice=hub, desk=desk,
                     node=node, desk_figures=figures, **extra)
    # REST bodies are bounded like frames (libchat.doors.web.rest)
    return listener(reactor, "web", "web", options["web"],
                    bounded_site(site.resource(), options["max-frame"]))
