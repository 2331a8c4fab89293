"""Serve a fake on a real loopback port.

In a test: ``served = yield listen(FakeWeCom(reactor), reactor)``, then
``api_base = served.base_url``; always ``yield served.stop()`` in a finalizer
(it stops listening, aborts open connections and waits until they are gone,
so no test leaves a dirty reactor behind). Standalone (another process, e.g.
next to a twistd under test): ``python -m tests.platforms.fakes.serve wecom``
prints ``listening <port>`` once it accepts connections (script it over the
``/_fake/`` routes) and stops on SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.web.server import Site

from .lark import FakeLark
from .wecom import FakeWeCom

FAKES = {"wecom": FakeWeCom, "lark": FakeLark}


class Tracked(WrappingFactory):
    """A factory that knows its open connections and says when none is left."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._idle: list[defer.Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def idle(self) -> defer.Deferred[None]:
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d


@attrs.define
class Served:
    port: IListeningPort
    factory: Tracked

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def stop(self) -> Any:
        yield self.port.stopListening()
        for p in list(self.factory.protocols):
            p.transport.abortConnection()
        yield self.factory.idle()


@defer.inlineCallbacks
def listen(fake: Any, reactor: Any, port: int = 0) -> Any:
    """Listen with ``fake``'s app on 127.0.0.1 (``port`` 0: any free one);
    fires with a :class:`Served`."""
    site = Site(fake.app.resource())
    site.noisy = False
    factory = Tracked(site)
    endpoint = endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
    listening = yield endpoint.listen(factory)
    return Served(listening, factory)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - run by hand or by tests in a child
    from twisted.internet import reactor

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in FAKES:
        sys.exit("usage: python -m tests.platforms.fakes.serve wecom|lark [PORT]")
    fake = FAKES[args[0]](reactor)
    d: Any = listen(fake, reactor, int(args[1]) if len(args) > 1 else 0)

    def failed(failure: Any) -> None:
        print(failure.getErrorMessage(), file=sys.stderr)
        reactor.stop()

    def listening(served: Served) -> None:
        print(f"listening {served.port.getHost().port}", flush=True)  # type: ignore[attr-defined]

    d.addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":  # pragma: no cover
    main()
