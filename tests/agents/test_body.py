"""The idle watchdog and body reader (libchat/runtimes/agents/body.py), on a
task.Clock and a StringTransport: no network."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from libchat.runtimes.agents.body import BodyReader, Watchdog
from libchat.runtimes.agents.client import TIMEOUT, AgentError


def outcome(d: defer.Deferred[Any]) -> Any:
    """``d``'s result or Failure so far (None while it waits); ``d`` keeps it."""
    box: list[Any] = []

    def look(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(look)
    if box and isinstance(box[0], Failure):
        d.addErrback(lambda _: None)   # looked at: not an unhandled error
    return box[0] if box else None


def test_watchdog_fails_a_silent_request_after_timeout_and_touch_resets_it() -> None:
    clock = task.Clock()
    dog = Watchdog(clock, 10, "bot")
    pending: defer.Deferred[str] = defer.Deferred()
    d = defer.Deferred.fromCoroutine(dog.wait(pending))
    clock.advance(9)
    dog.touch()
    clock.advance(9)
    assert outcome(d) is None
    clock.advance(1)
    failure = outcome(d)
    assert isinstance(failure, Failure) and failure.check(AgentError)
    assert failure.value.reason == TIMEOUT and "no byte from bot for 10 s" in failure.value.detail
    assert clock.getDelayedCalls() == []


def test_watchdog_passes_a_result_and_leaves_no_timer() -> None:
    clock = task.Clock()
    pending: defer.Deferred[str] = defer.Deferred()
    d = defer.Deferred.fromCoroutine(Watchdog(clock, 10).wait(pending))
    pending.callback("ok")
    assert outcome(d) == "ok" and clock.getDelayedCalls() == []


def test_a_caller_cancel_is_a_cancel_whatever_the_request_failed_with() -> None:
    clock = task.Clock()
    pending: defer.Deferred[str] = defer.Deferred(
        lambda d: d.errback(RuntimeError("ResponseNeverReceived")))
    d = defer.Deferred.fromCoroutine(Watchdog(clock, 10).wait(pending))
    d.cancel()
    assert outcome(d).check(defer.CancelledError)


class _Transport:
    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


def test_body_reader_feeds_the_sink_and_aborts_when_the_sink_raises() -> None:
    got: list[bytes] = []

    def sink(data: bytes) -> None:
        if data == b"bad":
            raise ValueError("no")
        got.append(data)

    body = BodyReader(sink)
    transport = _Transport()
    body.makeConnection(transport)   # type: ignore[arg-type]
    body.dataReceived(b"a")
    body.dataReceived(b"bad")
    body.dataReceived(b"late")
    assert got == [b"a"] and transport.stopped
    assert outcome(body.finished).check(ValueError)
    body.connectionLost(Failure(ResponseDone()))   # no second result


def test_body_reader_finishes_on_response_done() -> None:
    body = BodyReader(lambda data: None)
    body.makeConnection(_Transport())   # type: ignore[arg-type]
    body.connectionLost(Failure(ResponseDone()))
    assert outcome(body.finished) is None and body.finished.called


@pytest.mark.parametrize("cancel_twice", [False, True])
def test_cancelling_the_body_stops_the_transport(cancel_twice: bool) -> None:
    body = BodyReader(lambda data: None)
    transport = _Transport()
    body.makeConnection(transport)   # type: ignore[arg-type]
    body.finished.cancel()
    if cancel_twice:
        body.finished.cancel()
    assert transport.stopped and outcome(body.finished).check(defer.CancelledError)
