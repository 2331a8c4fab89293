"""Reading an agent's HTTP answer: a response body fed chunk by chunk to a
sink (:class:`BodyReader`) and an idle timer that fails the request in flight
when no byte came for ``timeout`` seconds (:class:`Watchdog`, CONTRACT §11).
treq gives the response; these two let a stalled or cancelled turn end by
aborting its connection, which ``treq.collect`` cannot do."""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from .client import TIMEOUT, AgentError


class BodyReader(Protocol):
    """A response body fed chunk by chunk to ``sink``; cancelling ``finished``
    aborts the connection (that is how a stalled or cancelled turn ends)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        self.finished: Deferred[None] = Deferred(self._abort)

    def _abort(self, _: Deferred[None]) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        try:
            self._sink(data)
        except BaseException:
            failure = Failure()
            self._abort(self.finished)
            self.finished.errback(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class Watchdog:
    """Fails the request in flight when no byte came for ``timeout`` seconds."""

    def __init__(self, clock: Any, timeout: float, service: str = "the agent") -> None:
        self._clock, self._timeout, self._service = clock, timeout, service
        self._pending: Deferred[Any] | None = None
        self._call: Any = None
        self.expired = False

    async def wait(self, d: Deferred[Any]) -> Any:
        """``d``'s result; a cancel (the watchdog's or the caller's) ends as
        TIMEOUT or CancelledError, whatever ``d`` failed with once cancelled
        (an Agent says ResponseNeverReceived)."""
        cancelled = []

        def cancel(_: Deferred[Any]) -> None:
            cancelled.append(True)
            d.cancel()

        proxy: Deferred[Any] = Deferred(cancel)

        def relay(result: Any) -> None:
            if not proxy.called:
                (proxy.errback if isinstance(result, Failure) else proxy.callback)(result)

        d.addBoth(relay)
        self._pending = proxy
        self.touch()
        try:
            return await proxy
        except BaseException:
            if self.expired:
                raise AgentError(TIMEOUT, f"no byte from {self._service} for {self._timeout:g} s") from None
            if cancelled:
                raise CancelledError() from None
            raise
        finally:
            self._pending = None
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None

    def touch(self) -> None:
        if self._call is not None and self._call.active():
            self._call.reset(self._timeout)
        else:
            self._call = self._clock.callLater(self._timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._pending is not None:
            self._pending.cancel()
