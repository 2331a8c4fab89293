"""One HTTP exchange with a hosted agent, read as it arrives (treq under it).

:class:`Exchange` sends a JSON request with treq and pushes the answer's body
chunks to a callback, so an SSE parser sees each byte once and nothing is
kept whole; a plain JSON body is collected up to a bound. ``timeout`` is the
longest silence allowed: no response head, or no body byte, for that long
fails with :data:`~libchat.runtimes.agents.client.TIMEOUT`. Cancelling the
Deferred of :meth:`Exchange.run` (a 1002) aborts the connection.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from libchat.runtimes.agents.client import HTTP_ERROR, PROTOCOL, TIMEOUT, AgentError

MAX_BODY = 1 << 20   # a non-streamed answer or error body larger than this fails the turn


class _Body(Protocol):
    def __init__(self, exchange: "Exchange") -> None:
        self.exchange = exchange

    def dataReceived(self, data: bytes) -> None:
        self.exchange._chunk(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.exchange._ended(reason)


class Exchange:
    """``Exchange(treq, clock, timeout).run(method, url, headers, body, on_head,
    on_chunk)``: a Deferred firing with the exchange's ``result`` (set by the
    callbacks through :meth:`finish`, or None at the end of the body)."""

    def __init__(self, treq_module: Any, clock: IReactorTime, timeout: float,
                 pool: Any = None) -> None:
        self.treq, self.clock, self.timeout, self.pool = treq_module, clock, timeout, pool
        self._timer: IDelayedCall | None = None
        self._request: defer.Deferred[Any] | None = None
        self._body: _Body | None = None
        self._done: defer.Deferred[Any] = defer.Deferred(self._cancelled)
        self._on_chunk: Callable[[bytes], None] = lambda _: None
        self._timed_out = False
        self._draining = False
        self._cancelling = False  # cancel() of run()'s Deferred: it ends in CancelledError

    def run(self, method: str, url: str, headers: dict[str, str], body: Any,
            on_head: Callable[[int, Any], Callable[[bytes], None]]) -> "defer.Deferred[Any]":
        """``on_head(code, response)`` returns the chunk callback for the body."""
        raw = {k: [v] for k, v in headers.items()}
        if body is not None:
            raw["Content-Type"] = ["application/json"]
        self._arm()
        extra = {"pool": self.pool} if self.pool is not None else {}
        self._request = self.treq.request(
            method, url, headers=Headers(raw),
            data=json.dumps(body).encode() if body is not None else None, unbuffered=True,
            **extra)

        def head(response: Any) -> None:
            self._request = None
            if self._done.called:
                return
            self._arm()
            try:
                self._on_chunk = on_head(response.code, response)
            except Exception:
                self._fail(Failure())
                return
            self._body = _Body(self)
            response.deliverBody(self._body)

        def failed(f: Failure) -> None:
            self._request = None
            if not self._done.called:
                self._fail(f)
        self._request.addCallbacks(head, failed)
        return self._done

    def finish(self, result: Any) -> None:
        """The answer is complete: fire with it. The rest of the body is read
        and ignored (aborting it would cost the pooled connection)."""
        if not self._done.called:
            self._request = None
            self._draining = True  # a body still open after ``timeout`` is cut
            self._arm()
            self._done.callback(result)

    def _fail(self, f: Failure) -> None:
        if self._done.called or self._cancelling:
            return
        self._disarm()
        if self._timed_out:
            f = Failure(AgentError(TIMEOUT, f"no answer for {self.timeout:g} s"))
        elif not f.check(AgentError, defer.CancelledError):
            f = Failure(AgentError(HTTP_ERROR, f"request failed: {_why(f)}", retryable=True))
        self._done.errback(f)
        # abort only now: cancelling a request still waiting for its head fails
        # it again, through ``failed`` in run(), which must find us done
        self._abort()

    def _chunk(self, data: bytes) -> None:
        if self._done.called:
            if self._draining:
                self._arm()
            return
        self._arm()
        try:
            self._on_chunk(data)
        except Exception:
            self._fail(Failure())

    def _ended(self, reason: Failure | None) -> None:
        if self._done.called:
            self._disarm()
            return
        self._disarm()
        from twisted.web.client import ResponseDone
        if reason is None or reason.check(ResponseDone):
            try:
                self._on_chunk(b"")  # the end: b"" tells the callback
            except Exception:
                self._fail(Failure())
                return
            self._disarm()  # a finish() in that callback has nothing left to drain
            if not self._done.called:
                self._done.callback(None)
        else:
            self._fail(Failure(AgentError(PROTOCOL, "the answer was cut off "
                                          f"({getattr(reason.type, '__name__', 'error')})")))

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        else:
            self._timer = self.clock.callLater(self.timeout, self._time_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _time_out(self) -> None:
        self._timer = None
        if self._draining:
            self._abort()
            return
        self._timed_out = True
        self._fail(Failure(defer.CancelledError()))

    def _abort(self) -> None:
        if self._request is not None:
            request, self._request = self._request, None
            request.cancel()
        if self._body is not None and self._body.transport is not None:
            body, self._body = self._body, None
            body.transport.stopProducing()  # type: ignore[union-attr]

    def _cancelled(self, d: "defer.Deferred[Any]") -> None:
        self._cancelling = True  # the aborted request's own failure is not the answer
        self._disarm()
        self._abort()  # d errbacks with CancelledError by itself


def connection_pool(clock: Any, size: int) -> Any:
    """A persistent pool keeping up to ``size`` connections per host (treq's
    default keeps 2, so ``max_concurrency`` requests would each connect anew);
    None when ``clock`` is not a reactor (tests with a fake clock)."""
    from twisted.internet.interfaces import IReactorTCP
    if not IReactorTCP.providedBy(clock):
        return None
    from twisted.web.client import HTTPConnectionPool
    pool = HTTPConnectionPool(clock, persistent=True)
    pool.maxPersistentPerHost = size
    return pool


def _why(f: Failure) -> str:
    """A connection failure's name and its first reason (no URL, no header)."""
    reasons = getattr(f.value, "reasons", None)
    if reasons:
        return f"{getattr(f.type, '__name__', 'error')} ({getattr(reasons[0].type, '__name__', 'error')})"
    return getattr(f.type, '__name__', 'error')


def collector(limit: int = MAX_BODY) -> tuple[Callable[[bytes], None], Callable[[], bytes]]:
    """A bounded chunk callback and a getter of what it collected."""
    parts: list[bytes] = []
    size = [0]

    def add(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise AgentError(PROTOCOL, f"an answer over {limit} bytes")
        parts.append(data)
    return add, lambda: b"".join(parts)


def error_of(status: int, raw: bytes) -> AgentError:
    """An HTTP error answer as an AgentError: the service's own message when
    it sent ``{"code","message"}`` (never the request, so never the key)."""
    detail = f"HTTP {status}"
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        code, message = body.get("code"), body.get("message") or body.get("msg")
        if code not in (None, "", 0):
            detail += f" {code}"
        if message:
            detail += f": {str(message)[:300]}"
    return AgentError(HTTP_ERROR, detail, retryable=status == 429 or status >= 500,
                      status=status)
