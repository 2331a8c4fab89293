"""Reaching Redis: endpoint parsing, the password file, the start checks,
timeouts, and the connections' behaviour across a redis-server restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer, reactor, task

from libchat.cluster.connect import (RedisAddress, RedisConnections, RedisNotSuitable,
                                     check_server, parse_redis, read_password_file)
from libchat.cluster.interfaces import RedisUnavailable
from libchat.cluster.scripts import NAMES, Scripts
from libchat.options import StartupError

from .redis_server import RedisServer, running_server


# -- parsing (no I/O) ---------------------------------------------------------------------

@pytest.mark.parametrize("text, address", [
    ("tcp:host=127.0.0.1:port=6380", RedisAddress("tcp:host=127.0.0.1:port=6380")),
    ("tcp:127.0.0.1:6380", RedisAddress("tcp:127.0.0.1:6380")),
    ("unix:path=/run/redis.sock", RedisAddress("unix:path=/run/redis.sock")),
    ("redis://127.0.0.1:6379/0", RedisAddress("tcp:host=127.0.0.1:port=6379", 0)),
    ("redis://db.internal/3", RedisAddress("tcp:host=db.internal:port=6379", 3)),
    ("redis://[::1]:7000", RedisAddress("tcp:host=\\:\\:1:port=7000", None)),
])
def test_redis_endpoints_parse_to_twisted_client_endpoint_strings(
        text: str, address: RedisAddress) -> None:
    assert parse_redis(text) == address


@pytest.mark.parametrize("text", ["localhost:6379", "http://x", "redis://h:port/0", "tcp"])
def test_a_malformed_redis_endpoint_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--redis"):
        parse_redis(text)


def test_a_password_in_the_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as e:
        parse_redis("redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in str(e.value) and "--redis-password-file" in str(e.value)


def test_the_password_file_gives_its_first_line_and_errors_never_show_it(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret  \nignored\n")
    assert read_password_file(f) == "s3cret"
    f.write_text("\n")
    with pytest.raises(StartupError, match="is empty"):
        read_password_file(f)
    with pytest.raises(StartupError, match="cannot read"):
        read_password_file(tmp_path / "missing")


# -- against a real redis-server ------------------------------------------------------------

@defer.inlineCallbacks
def until_ok(call: Any, within: float = 10.0) -> Any:
    """``call()`` until it stops failing with RedisUnavailable (Redis coming
    back), pausing between tries so the reactor can reconnect."""
    deadline = time.monotonic() + within
    while True:
        try:
            return (yield call())
        except RedisUnavailable:
            assert time.monotonic() < deadline, "Redis did not come back"
            yield task.deferLater(reactor, 0.05, lambda: None)


def connections(server: RedisServer, endpoint: str | None = None, password: str | None = None,
                timeout: float = 1.0) -> RedisConnections:
    return RedisConnections(reactor, parse_redis(endpoint or server.endpoint), password, timeout)


@pytest_twisted.inlineCallbacks
def test_check_server_accepts_a_redis_7_that_fsyncs_every_write(redis_server: RedisServer) -> Any:
    conns = connections(redis_server)
    try:
        yield conns.ready()
        info = yield check_server(conns)
        assert info.version >= (7, 0) and info.durable
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_check_server_refuses_a_redis_that_does_not_fsync_every_write(
        redis_server: RedisServer) -> Any:
    conns = connections(redis_server)
    try:
        yield conns.call("CONFIG", "SET", "appendfsync", "everysec")
        with pytest.raises(RedisNotSuitable, match="appendfsync everysec.*appendfsync always"):
            yield check_server(conns)
        yield conns.call("CONFIG", "SET", "appendonly", "no")
        with pytest.raises(RedisNotSuitable, match="appendonly no"):
            yield check_server(conns)
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_unix_socket_endpoint_and_a_url_database_number_are_used(
        redis_server: RedisServer) -> Any:
    unix = connections(redis_server, redis_server.unix_endpoint)
    db3 = connections(redis_server, f"redis://127.0.0.1:{redis_server.port}/3")
    try:
        yield unix.call("SET", "where", "db0")
        yield db3.call("SET", "where", "db3")
        assert (yield unix.call("GET", "where")) == b"db0"
        assert (yield db3.call("GET", "where")) == b"db3"
        # bulk replies stay bytes: txredisapi's number conversion is off
        yield db3.call("SET", "n", "007")
        assert (yield db3.call("GET", "n")) == b"007"
    finally:
        yield defer.gatherResults([unix.disconnect(), db3.disconnect()])


@pytest.fixture
def secured_server() -> Any:
    yield from running_server(password="pa55-word")


@pytest_twisted.inlineCallbacks
def test_a_password_server_is_used_with_the_right_password_on_all_three_connections(
        secured_server: RedisServer) -> Any:
    conns = connections(secured_server, password="pa55-word")
    got: defer.Deferred[bytes] = defer.Deferred()
    try:
        yield conns.ready()
        yield conns.subscribe(b"ch", got.callback)
        yield conns.call("PUBLISH", b"ch", b"x")
        assert (yield got.addTimeout(5, reactor)) == b"x"
        assert (yield conns.block("XREAD", "BLOCK", 10, "STREAMS", "s", "0", timeout=2)) is None
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_wrong_password_fails_ready_with_a_message_that_does_not_contain_it(
        secured_server: RedisServer, logged: Any) -> Any:
    logged.allow("could not auth")
    conns = connections(secured_server, password="not-the-one")
    try:
        with pytest.raises(RedisNotSuitable) as e:
            yield conns.ready(timeout=5)
        assert "not-the-one" not in str(e.value)
        assert "WRONGPASS" in str(e.value) or "auth" in str(e.value)
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_an_unreachable_redis_fails_ready_within_its_timeout() -> Any:
    from .redis_server import free_port
    conns = RedisConnections(reactor, parse_redis(f"tcp:host=127.0.0.1:port={free_port()}"))
    try:
        started = time.monotonic()
        with pytest.raises(RedisNotSuitable, match="no answer in 0.3s"):
            yield conns.ready(timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_calls_while_redis_is_down_fail_after_their_timeout_then_work_again(
        redis_server: RedisServer) -> Any:
    conns = connections(redis_server, timeout=0.5)
    try:
        yield conns.ready()
        redis_server.kill9()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            yield conns.call("PING")
        assert time.monotonic() - started < 1.5
        redis_server.restart()
        assert (yield until_ok(lambda: conns.call("PING"))) == "PONG"
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_blocking_read_outlasting_the_call_timeout_is_not_cut_by_it(
        redis_server: RedisServer) -> Any:
    conns = connections(redis_server, timeout=0.2)
    try:
        started = time.monotonic()
        assert (yield conns.block("XREAD", "BLOCK", 500, "STREAMS", "s", "0", timeout=2)) is None
        assert time.monotonic() - started >= 0.45
        assert (yield conns.call("PING")) == "PONG"  # the command connection was not held
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_scripts_are_reloaded_on_noscript_after_a_redis_restart(
        redis_server: RedisServer, logged: Any) -> Any:
    conns = connections(redis_server)
    scripts = Scripts(conns)
    try:
        yield scripts.load_all()
        assert scripts.loads == len(NAMES)
        assert (yield scripts.call("lease_refresh", ["k"], ["x", 1000])) == 0
        assert scripts.loads == len(NAMES)  # loaded: no reload
        redis_server.kill9()
        redis_server.restart()
        assert (yield until_ok(lambda: scripts.call("lease_refresh", ["k"], ["x", 1000]))) == 0
        assert scripts.loads == len(NAMES) + 1
        assert any("was not loaded" in e.get("log_format", "") for e in logged.events)
        with pytest.raises(txredisapi.ResponseError):  # other errors pass through
            yield scripts.call("claim", [], [])
    finally:
        yield conns.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_hung_redis_fails_calls_in_time_and_its_connection_is_replaced(
        redis_server: RedisServer) -> Any:
    import os
    import signal
    conns = connections(redis_server, timeout=0.3)
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    try:
        yield conns.ready()
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                yield conns.call("PING")
            assert time.monotonic() - started < 1.0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (yield until_ok(lambda: conns.call("PING"))) == "PONG"
    finally:
        yield conns.disconnect()
