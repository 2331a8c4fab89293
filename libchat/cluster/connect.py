"""Reaching the shared Redis: ``--redis`` endpoints, the password file, the
three connections a node keeps, and the checks made at start.

Why three connections: a ``XREAD BLOCK`` holds its connection until a doorbell
or its timeout, and a ``SUBSCRIBE``\\d connection accepts nothing else, so each
gets its own and the command connection never waits behind them.

txredisapi quirks this module exists to contain (read from its 1.6.0 source):

- a call made while disconnected waits, with no limit, for a reconnect (its
  ``replyTimeout`` only starts once the command is written): every call here
  has its own timeout and fails with :class:`RedisUnavailable`;
- ``replyTimeout`` aborts the connection when it fires (and fails every
  command waiting on it), which is what we want for a hung server, but not
  for a blocking read: that one is sent with ``apply_timeout=False`` and timed
  here instead;
- ``convertNumbers`` (on by default) turns any bulk reply that looks like a
  number into an int, payloads too: off, and ``charset=None`` so bulk replies
  are always bytes;
- it never re-subscribes after a reconnect: :class:`_Subscriber` does it in
  ``connectionMade``; and its ``SubscriberFactory`` drops the password, so we
  build a plain ``RedisFactory`` with our protocol instead;
- a failed AUTH stops reconnecting for good (``factory.stopTrying()``), so a
  wrong password is reported at start rather than retried;
- the reconnect back-off starts at 1 s and grows by e up to 10 s: far too slow
  for "service back within 10 s", so it is set to 0.1 s doubling up to 1 s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure

from libchat.histogram import FAST_BUCKETS, Histogram
from libchat.cluster.interfaces import RedisUnavailable
from libchat.errors import StartupError

log = Logger()

DEFAULT_TIMEOUT = 2.0
TIMEOUT_MARGIN = 0.25
MIN_VERSION = (7, 0)


class RedisNotSuitable(StartupError):
    """The Redis named by ``--redis`` cannot back a cluster (does not fsync
    every write, too old, unreachable, refused our password)."""


# -- endpoints and secrets ------------------------------------------------------------

_URL = re.compile(r"^redis://(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?(?:/(?P<db>\d+))?/?$")


@attrs.frozen
class RedisAddress:
    """Where Redis is: a Twisted client endpoint string and a database number."""

    endpoint: str
    dbid: int | None = None

    def __str__(self) -> str:
        return self.endpoint + (f" db {self.dbid}" if self.dbid else "")


def parse_redis(text: str) -> RedisAddress:
    """Parse ``--redis``: a Twisted client endpoint string (``tcp:host=H:port=P``,
    ``tcp:H:P``, ``unix:path=/run/redis.sock``, as CONTRACT §14 says) or a
    ``redis://host:port/db`` URL. A password in the URL is refused: it would
    sit in ``ps`` output and logs; use ``--redis-password-file``."""
    text = text.strip()
    if text.startswith("redis://"):
        if "@" in text:
            raise ValueError("--redis: put the password in --redis-password-file, "
                             "not in the URL")
        m = _URL.match(text)
        if m is None:
            raise ValueError(f"--redis: not a redis://host:port/db URL: {text!r}")
        host = m["host"].strip("[]")
        port = int(m["port"] or 6379)
        host = host.replace(":", "\\:")  # an IPv6 literal, escaped for the endpoint parser
        db = int(m["db"]) if m["db"] else None
        return RedisAddress(f"tcp:host={host}:port={port}", db)
    kind = text.split(":", 1)[0]
    if kind not in ("tcp", "unix", "tls") or ":" not in text:
        raise ValueError(f"--redis: expected tcp:host=H:port=P, unix:path=P or "
                         f"redis://host:port/db, got {text!r}")
    return RedisAddress(text)


def read_password_file(path: str | Path) -> str:
    """The Redis password: the file's first line (the file is the secret's one
    home; the value is never logged, nor put in an error message)."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise StartupError(f"libchat: cannot read --redis-password-file {path}: "
                           f"{e.strerror}") from None
    lines = raw.splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise StartupError(f"libchat: --redis-password-file {path} is empty")
    return password


# -- connections ------------------------------------------------------------------------

class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """A SUBSCRIBE connection that renews its subscriptions whenever it
    (re)connects and hands messages to the :class:`RedisConnections` it serves."""

    owner: RedisConnections

    def connectionMade(self) -> Any:
        d = super().connectionMade()  # AUTH and SELECT first
        d.addCallback(lambda _: self._resubscribe())
        return d

    def _resubscribe(self) -> Any:
        channels = sorted(self.factory.owner.channels)
        if not channels or not self.connected:
            return None
        d = self.subscribe(channels)
        d.addErrback(lambda f: log.warn("redis: re-subscribing failed: {why}",
                                        why=f.getErrorMessage()))
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.owner.dispatch(channel, message)


def _fire(d: defer.Deferred[Any], result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(None)


def _factory(address: RedisAddress, password: str | None, timeout: float,
             protocol: type | None = None) -> Any:
    factory = txredisapi.RedisFactory(
        None, address.dbid, 1, isLazy=True, charset=None, password=password,
        replyTimeout=timeout, convertNumbers=False)
    if protocol is not None:
        factory.protocol = protocol
    factory.initialDelay = 0.1
    factory.factor = 2.0
    factory.maxDelay = 1.0
    # a lazy factory's ``deferred`` fails when the first AUTH is refused: keep
    # the outcome for ready() instead of leaving an unhandled failure behind
    factory.outcome = None
    factory.waiters = []

    def settle(result: Any) -> None:
        factory.outcome = result
        waiters, factory.waiters = factory.waiters, []
        for d in waiters:
            _fire(d, result)
    factory.deferred.addBoth(settle)
    return factory


class RedisConnections:
    """A node's three connections to one Redis, and a timeout on every call.

    Commands go through :meth:`call` (fails with :class:`RedisUnavailable` after
    ``timeout`` seconds, connected or not); blocking stream reads through
    :meth:`block`; pub/sub through :meth:`subscribe`."""

    def __init__(self, reactor: Any, address: RedisAddress, password: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.channels: dict[bytes, Callable[[bytes], object]] = {}
        self.round_trips = Histogram(FAST_BUCKETS)  # answered commands (/metrics)
        self._factories: list[Any] = []
        self._command = self._connect(_factory(address, password, timeout))
        # no reply timeout of its own: a blocking read is timed by block()
        self._blocking = self._connect(_factory(address, password, 0))
        sub = _factory(address, password, timeout, protocol=_Subscriber)
        sub.owner = self
        self._subscriber = self._connect(sub)

    def _connect(self, factory: Any) -> Any:
        factory.startConnecting(endpoints.clientFromString(self.reactor, self.address.endpoint))
        self._factories.append(factory)
        return factory.handler

    # -- readiness and shutdown ------------------------------------------------------

    def ready(self, timeout: float = 10.0) -> defer.Deferred[None]:
        """Fires once all three connections are up; fails with
        :class:`RedisNotSuitable` (naming the endpoint, never the password)
        after ``timeout`` seconds or a refused AUTH."""
        waits = []
        for f in self._factories:
            d: defer.Deferred[Any] = defer.Deferred()
            if f.outcome is None:
                f.waiters.append(d)
            else:
                _fire(d, f.outcome)
            waits.append(d)
        all_up = defer.gatherResults(waits, consumeErrors=True)
        all_up.addTimeout(timeout, self.reactor)

        def refused(f: Failure) -> None:
            if isinstance(f.value, defer.FirstError):
                f = f.value.subFailure
            why = ("no answer in %gs" % timeout if f.check(defer.TimeoutError, defer.CancelledError)
                   else f.getErrorMessage())
            raise RedisNotSuitable(f"libchat: cannot use Redis at {self.address}: {why}")
        return all_up.addCallbacks(lambda _: None, refused)

    def disconnect(self) -> defer.Deferred[Any]:
        """Close all three and stop reconnecting; fires when they are closed."""
        return defer.gatherResults([f.disconnect() for f in self._factories],
                                   consumeErrors=True)

    # -- calls ---------------------------------------------------------------------------

    def _timed(self, d: defer.Deferred[Any], timeout: float, what: str) -> defer.Deferred[Any]:
        # a little later than the connection's own replyTimeout, so that one
        # fires first for a command already written and aborts the connection
        # (a hung or unreachable server is then reconnected, not waited on);
        # ours covers the wait for a connection, which replyTimeout does not
        d.addTimeout(timeout + TIMEOUT_MARGIN, self.reactor)

        def unavailable(f: Failure) -> None:
            if f.check(defer.TimeoutError, defer.CancelledError, txredisapi.TimeoutError):
                raise RedisUnavailable(f"redis: no answer to {what} in {timeout:g}s")
            if f.check(txredisapi.ConnectionError):
                raise RedisUnavailable(f"redis: {what}: {f.getErrorMessage()}")
            f.raiseException()
        return d.addErrback(unavailable)

    def call(self, *args: Any, timeout: float | None = None) -> defer.Deferred[Any]:
        """One command on the command connection; its reply (bulk replies as
        bytes). Redis errors fail with ``txredisapi.ResponseError``."""
        t = self.timeout if timeout is None else timeout
        started = self.reactor.seconds()
        d = self._timed(defer.maybeDeferred(self._command.execute_command, *args),
                        t, str(args[0]))

        def timed(result: Any) -> Any:
            self.round_trips.observe(self.reactor.seconds() - started)
            return result
        return d.addCallback(timed)

    def block(self, *args: Any, timeout: float) -> defer.Deferred[Any]:
        """A blocking command (``XREAD BLOCK ms``) on the blocking connection;
        ``timeout`` should exceed its block time by the round-trip budget."""
        d = defer.maybeDeferred(self._blocking.execute_command, *args, apply_timeout=False)
        return self._timed(d, timeout, str(args[0]))

    # -- pub/sub ---------------------------------------------------------------------

    def subscribe(self, channel: bytes, callback: Callable[[bytes], object]) -> defer.Deferred[Any]:
        """Subscribe (now, and again after every reconnect)."""
        self.channels[channel] = callback
        d = defer.maybeDeferred(self._subscriber.subscribe, [channel])
        return self._timed(d, self.timeout, "SUBSCRIBE")

    def unsubscribe(self, channel: bytes) -> defer.Deferred[Any]:
        self.channels.pop(channel, None)
        d = defer.maybeDeferred(self._subscriber.unsubscribe, [channel])
        return self._timed(d, self.timeout, "UNSUBSCRIBE")

    def dispatch(self, channel: bytes, message: bytes) -> None:
        callback = self.channels.get(channel)
        if callback is None:
            return
        try:
            callback(message)
        except Exception:
            log.failure("redis: a subscriber of {channel} failed", channel=channel)


# -- the checks at start -------------------------------------------------------------

@attrs.frozen
class ServerInfo:
    version: tuple[int, ...]
    appendonly: bool
    appendfsync: str

    @property
    def durable(self) -> bool:
        """Every acknowledged write is on disk (CONTRACT §14)."""
        return self.appendonly and self.appendfsync == "always"


def _config(reply: Any) -> dict[str, str]:
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply or []]
    return dict(zip(items[::2], items[1::2]))


@defer.inlineCallbacks
def server_info(conns: RedisConnections) -> Any:
    """The facts about the server a node checks at start."""
    conf = _config((yield conns.call("CONFIG", "GET", "appendonly")))
    conf.update(_config((yield conns.call("CONFIG", "GET", "appendfsync"))))
    info = yield conns.call("INFO", "server")
    text = info.decode() if isinstance(info, bytes) else str(info)
    m = re.search(r"^redis_version:([\d.]+)", text, re.M)
    version = tuple(int(p) for p in m[1].split(".")) if m else (0,)
    return ServerInfo(version, conf.get("appendonly") == "yes", conf.get("appendfsync", "?"))


@defer.inlineCallbacks
def check_server(conns: RedisConnections) -> Any:
    """Refuse a Redis that cannot keep §14's promise: version >= 7, and
    ``appendonly yes`` + ``appendfsync always`` (else "acknowledged" would
    not mean "on disk"). Returns the :class:`ServerInfo`."""
    try:
        info = yield server_info(conns)
    except txredisapi.ResponseError as e:
        raise RedisNotSuitable(f"libchat: Redis at {conns.address} refused CONFIG GET "
                               f"({e}); libchat must see appendonly/appendfsync") from None
    except RedisUnavailable as e:
        raise RedisNotSuitable(f"libchat: cannot use Redis at {conns.address}: {e}") from None
    if info.version < MIN_VERSION:
        raise RedisNotSuitable(
            f"libchat: Redis at {conns.address} is version "
            f"{'.'.join(map(str, info.version))}; libchat needs Redis >= 7")
    if not info.durable:
        raise RedisNotSuitable(
            f"libchat: Redis at {conns.address} has appendonly "
            f"{'yes' if info.appendonly else 'no'}, appendfsync {info.appendfsync}: "
            "acknowledged writes could be lost; set appendonly yes and appendfsync always")
    return info


__all__ = ["RedisAddress", "RedisConnections", "RedisNotSuitable", "ServerInfo",
           "check_server", "parse_redis", "read_password_file", "server_info"]
