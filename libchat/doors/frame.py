"""The front door for front services: framed events over TCP (or any stream).

Each connection is an :class:`~libchat.interfaces.IUpstream` of channel
``frame``. Per docs/protocol.md §1, a broken stream gets one 2004 and is
closed; a bad event gets a 2004 and the connection stays open.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.events import BadEvent, parse_upstream
from libchat.interfaces import IRouter, IUpstream, Receipt
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC, FrameError, FrameProtocol


@implementer(IUpstream, IPushProducer)
class FrontProtocol(FrameProtocol):
    """Backpressure (docs/security.md): the connection is a push producer for
    its own transport. When the client stops reading and Twisted's write
    buffer fills, ``pauseProducing`` makes it not ``alive()`` (the router
    keeps its replies in the durable pending queue or gives them to another
    connection) and stops reading from it; ``resumeProducing`` reads again
    and hands it what waited. A frame left incomplete for ``frame_timeout``
    seconds closes the connection; an idle connection is never timed out."""

    channel = "frame"
    router: IRouter
    clock: IReactorTime
    frame_timeout: float = 30.0

    def connectionMade(self) -> None:
        super().connectionMade()
        self._open = True
        self._paused = False
        self._stall: IDelayedCall | None = None
        self._frames = 0
        self._transport().registerProducer(self, True)
        self.log.info("front connection from {peer}", peer=str(self._transport().getPeer()))
        self.router.attach(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._open = False
        self._disarm()
        self.router.detach(self)
        self.log.info("front connection {peer} closed", peer=str(self._transport().getPeer()))

    def _transport(self) -> Any:
        """The ITCPTransport (typed as ITransport | None by Protocol)."""
        return self.transport

    def alive(self) -> bool:
        return self._open and not self._paused and not self._transport().disconnecting

    # -- backpressure (IPushProducer) -------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()  # a client we stopped reading from is not stalling
        self._transport().pauseProducing()

    def resumeProducing(self) -> None:
        if not self._open:
            return
        self._paused = False
        self._transport().resumeProducing()
        self._arm(progress=True)
        self.router.drain(self)

    def stopProducing(self) -> None:
        self._open = False

    # -- stalled frames ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        before = self._frames
        super().dataReceived(data)
        if self._open and not getattr(self.transport, "disconnecting", False):
            self._arm(progress=self._frames != before)

    def _arm(self, progress: bool) -> None:
        """Time the frame being received; a completed frame restarts the clock."""
        if not self.decoder.buffered() or self._paused or self.frame_timeout <= 0:
            self._disarm()
        elif self._stall is None or not self._stall.active():
            self._stall = self.clock.callLater(self.frame_timeout, self._stalled)
        elif progress:
            self._stall.reset(self.frame_timeout)

    def _disarm(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self.frameError(FrameError(codes.BAD_FRAME, f"frame incomplete for "
                                   f"{self.frame_timeout:g}s ({self.decoder.buffered()} bytes)"))

    def deliver(self, event: dict[str, Any]) -> None:
        self.sendEvent(event)

    def frameReceived(self, event_type: int, body: bytes) -> None:
        self._frames += 1
        answer: dict[str, Any] | None
        try:
            event = parse_upstream(event_type, body)
            receipt = self.router.receive(self, event)
            if isinstance(receipt, Deferred):  # a cluster node (docs/scaleout.md)
                receipt.addCallback(self._answer)
                receipt.addErrback(self._internal, event_type)
                return
            answer = receipt.error
        except BadEvent as e:
            answer = e.event()
        except Exception:
            self.log.failure("internal error handling a {etype} frame", etype=event_type)
            answer = codes.error(codes.INTERNAL_ERROR, "internal error; see the server log")
        if answer is not None:
            self.sendEvent(answer)

    def _answer(self, receipt: Receipt) -> None:
        if receipt.error is not None and self._open:
            self.sendEvent(receipt.error)

    def _internal(self, f: Failure, event_type: int) -> None:
        self.log.failure("internal error handling a {etype} frame", f, etype=event_type)
        if self._open:
            self.sendEvent(codes.error(codes.INTERNAL_ERROR, "internal error; see the server log"))


class FrontFactory(Factory):
    protocol = FrontProtocol

    def __init__(self, router: IRouter, *, clock: IReactorTime, magic: int = MAGIC,
                 max_frame: int = DEFAULT_MAX_FRAME, frame_timeout: float = 30.0) -> None:
        self.router = router
        self.magic = magic
        self.max_frame = max_frame
        self.frame_timeout = frame_timeout
        self.clock = clock

    def buildProtocol(self, addr: Any) -> FrontProtocol:
        p = FrontProtocol()
        p.factory = self
        p.router = self.router
        p.clock = self.clock
        p.frame_timeout = self.frame_timeout
        p.magic = self.magic
        p.max_frame = self.max_frame
        return p
