"""Serve a fake on a real loopback port.

In a test: ``port = yield listen(FakeWeCom(reactor), reactor)``, then
``api_base = f"http://127.0.0.1:{port.getHost().port}"``; always
``port.stopListening()`` in a finalizer. Standalone (another process, e.g.
next to a twistd under test): ``python -m tests.platforms.fakes.serve wecom``
prints ``listening <port>`` once it accepts connections (script it over the
``/_fake/`` routes) and stops on SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from .lark import FakeLark
from .wecom import FakeWeCom

FAKES = {"wecom": FakeWeCom, "lark": FakeLark}


def listen(fake: Any, reactor: Any, port: int = 0) -> defer.Deferred[IListeningPort]:
    """Listen with ``fake``'s app on 127.0.0.1 (``port`` 0: any free one)."""
    site = Site(fake.app.resource())
    site.noisy = False
    endpoint = endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
    return endpoint.listen(site)


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

    def listening(port: Any) -> None:
        print(f"listening {port.getHost().port}", flush=True)  # the readiness line

    d.addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":  # pragma: no cover
    main()
