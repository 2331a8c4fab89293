"""The front door for front services: framed events over TCP (or any stream).

Each connection is an :class:`~libchat.interfaces.IUpstream` of channel
``frame``. Per CONTRACT section 1, a broken stream gets one 2004 and is
closed; a bad event gets a 2004 and the connection stays open.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat import codes
from libchat.events import BadEvent, parse_upstream
from libchat.interfaces import IUpstream
from libchat.router import Router
from libchat.wire import DEFAULT_MAX_FRAME, MAGIC, FrameProtocol


@implementer(IUpstream)
class FrontProtocol(FrameProtocol):
    channel = "frame"
    router: Router

    def connectionMade(self) -> None:
        super().connectionMade()
        self._open = True
        self.log.info("front connection from {peer}", peer=str(self.transport.getPeer()))
        self.router.attach(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._open = False
        self.router.detach(self)
        self.log.info("front connection {peer} closed", peer=str(self.transport.getPeer()))

    def alive(self) -> bool:
        return self._open and not self.transport.disconnecting

    def deliver(self, event: dict[str, Any]) -> None:
        self.sendEvent(event)

    def frameReceived(self, event_type: int, body: bytes) -> None:
        try:
            event = parse_upstream(event_type, body)
            answer = self.router.receive(self, event)
        except BadEvent as e:
            answer = e.event()
        except Exception:
            self.log.failure("internal error handling a {etype} frame", etype=event_type)
            answer = codes.error(codes.INTERNAL_ERROR, "internal error; see the server log")
        if answer is not None:
            self.sendEvent(answer)


class FrontFactory(Factory):
    protocol = FrontProtocol

    def __init__(self, router: Router, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.router = router
        self.magic = magic
        self.max_frame = max_frame

    def buildProtocol(self, addr: Any) -> FrontProtocol:
        p = FrontProtocol()
        p.factory = self
        p.router = self.router
        p.magic = self.magic
        p.max_frame = self.max_frame
        return p
