"""``GET /ws``: the §2 events as JSON text frames over an autobahn WebSocket.

Identity comes from the handshake (:mod:`libchat.doors.web.auth`), never from a
frame; so does the operator role (docs/operators.md): an operator's socket is
also handed to the :class:`~libchat.interfaces.IOperatorDesk`, and may send
3102/3103 and replay the dialogs it holds. Each connection has its own rate
limit; a message over ``--max-frame`` is answered with 2004 ``MSG_TOO_LARGE`` and the connection is closed; ping
every ``ping`` seconds, closed when no pong comes within ``pong`` seconds.
:class:`ConnectionRegistry` (seed 002) maps each user to their open sockets
and pushes a dialog's events to all of them.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.events import BadEvent, check_upstream, decode_body
from libchat.jsonc import dumps
from libchat.doors.web.auth import Authenticator, Unauthorized
from libchat.doors.web.gateway import MAX_REPLAY, NotFound, WebGateway
from libchat.interfaces import IOperatorDesk, IOperatorSink, Unavailable
from libchat.later import then

OPERATOR_EVENTS = frozenset({3102, 3103})

DEFAULT_RATE = 20.0  # messages per second per connection (burst of the same size)
DEFAULT_MAX_PER_USER = 16
DEFAULT_PING = 25.0  # docs/web.md
DEFAULT_PONG = 10.0


class RateLimiter:
    """A token bucket: ``rate`` messages per second, bursts up to ``burst``."""

    def __init__(self, rate: float, now: Callable[[], float], burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.now = now
        self.tokens = self.burst
        self.at = now()

    def allow(self) -> bool:
        now = self.now()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ConnectionRegistry:
    """user id -> open connections; each push reaches all of them."""

    def __init__(self, max_per_user: int = DEFAULT_MAX_PER_USER) -> None:
        self.max_per_user = max_per_user
        self._by_user: dict[str, list[ChatSocket]] = defaultdict(list)

    def full(self, user_id: str) -> bool:
        return len(self._by_user.get(user_id, ())) >= self.max_per_user

    def add(self, conn: ChatSocket) -> None:
        self._by_user[conn.user_id].append(conn)

    def remove(self, conn: ChatSocket) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._by_user[conn.user_id]

    def connections(self, user_id: str) -> list[ChatSocket]:
        return list(self._by_user.get(user_id, ()))

    def count(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    def users(self) -> int:
        return len(self._by_user)

    def push(self, user_id: str, event: dict[str, Any]) -> None:
        payload = dumps(event)
        for conn in self.connections(user_id):
            conn.send_payload(payload)


def _reason_phrase(text: str) -> str:
    """A safe HTTP reason phrase (autobahn puts it in the status line)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:120]


# not ``self.log``: autobahn keeps its own (txaio) logger there
log = Logger("libchat.doors.web.ws")


@implementer(IOperatorSink)
class ChatSocket(WebSocketServerProtocol):
    factory: ChatSocketFactory
    user_id: str = ""
    operator: bool = False  # an operator's socket (docs/operators.md)
    conn_id: int = 0
    _limiter: RateLimiter

    # -- handshake and lifetime ------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        f = self.factory
        try:
            self.user_id, operator = f.auth.websocket_identity(request.headers, request.params)
        except Unauthorized as e:
            log.info("refused a WebSocket from {peer}: {why}", peer=request.peer, why=str(e))
            raise ConnectionDeny(401, _reason_phrase(f"Unauthorized: {e}")) from None
        if f.registry.full(self.user_id):
            log.info("refused a WebSocket of {user_id}: {n} already open",
                          user_id=self.user_id, n=f.registry.max_per_user)
            raise ConnectionDeny(429, f"Too Many Connections (at most "
                                      f"{f.registry.max_per_user} per user)")
        self.operator = operator and f.desk is not None
        self.conn_id = next(f.ids)
        self._limiter = RateLimiter(f.rate, f.clock.seconds)

    def onOpen(self) -> None:
        self.factory.registry.add(self)
        log.info("WebSocket {conn_id} of {user_id} open{role}", conn_id=self.conn_id,
                 user_id=self.user_id, role=" (operator)" if self.operator else "")
        if self.operator and self.factory.desk is not None:
            self.factory.desk.operator_connected(self.user_id, self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.user_id:
            self.factory.registry.remove(self)
            if self.operator and self.factory.desk is not None:
                self.factory.desk.operator_gone(self.user_id, self)
            log.info("WebSocket {conn_id} of {user_id} closed ({code})",
                          conn_id=self.conn_id, user_id=self.user_id, code=code)

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # autobahn's hook for a message over maxMessagePayloadSize: docs/web.md
        # wants a 2004 first, then the close (1009) autobahn does
        self.send_event(codes.error(codes.MSG_TOO_LARGE,
                                    f"message over {max_msg_size} bytes; closing"))
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)

    # -- sending ---------------------------------------------------------------

    def send_payload(self, payload: bytes) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)

    def send_event(self, event: dict[str, Any]) -> None:
        self.send_payload(dumps(event))

    # -- receiving -------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            answers = self._handle(payload, isBinary)
        except Exception:  # noqa: BLE001 - one bad message must not end the socket
            answers = self._problem(Failure())
        if isinstance(answers, defer.Deferred):  # a cluster node (docs/scaleout.md)
            answers.addErrback(self._problem).addCallback(self._send_all)
        else:
            self._send_all(answers)

    def _send_all(self, answers: list[dict[str, Any]]) -> None:
        for answer in answers:
            self.send_event(answer)

    def _problem(self, f: Failure) -> list[dict[str, Any]]:
        if isinstance(f.value, BadEvent):
            return [f.value.event()]
        if isinstance(f.value, NotFound):
            return [BadEvent(codes.BAD_REQUEST, "no such dialog of yours",
                             f.value.args[0]).event()]
        if f.check(Unavailable):
            return [codes.error(codes.INTERNAL_ERROR, "shared storage unavailable; try again")]
        log.failure("internal error handling a WebSocket message of {user_id}", f,
                    user_id=self.user_id)
        return [codes.error(codes.INTERNAL_ERROR, "internal error; see the server log")]

    def _handle(self, payload: bytes, isBinary: bool) -> list[dict[str, Any]]:
        if not self._limiter.allow():
            try:
                event = decode_body(None, payload)
            except BadEvent:
                event = {}
            return [codes.error(codes.RATE_LIMIT,
                                f"over {self.factory.rate:g} messages per second; "
                                "not processed, send it again later",
                                dialog_id=_str(event.get("dialog_id")),
                                message_id=_str(event.get("message_id")), retry=True)]
        if isBinary:
            raise BadEvent(codes.BAD_REQUEST, "send JSON text frames, not binary ones")
        event = decode_body(None, payload)
        if event["event_type"] == codes.REPLAY:
            return self._replay(event)
        if event["event_type"] in OPERATOR_EVENTS:
            desk = self.factory.desk
            if not self.operator or desk is None:
                raise BadEvent(codes.BAD_REQUEST, "only operators may send 3102/3103",
                               _str(event.get("dialog_id")))
            # a cluster node's desk may be on another node: a Deferred answer
            return then(desk.operator_event(self.user_id, event),
                        lambda answer: [answer] if answer is not None else [])
        event["user_id"] = self.user_id  # the identity decides, never the frame
        return then(self.factory.gateway.receive(check_upstream(event)),
                    lambda r: [r.error] if r.error is not None else [])

    def _replay(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        dialog_id, after = event.get("dialog_id"), event.get("after", 0)
        if not isinstance(dialog_id, str):
            raise BadEvent(codes.BAD_REQUEST, "a 1003 needs a dialog_id")
        if after is None:
            after = 0
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise BadEvent(codes.BAD_REQUEST, "after must be an integer >= 0", dialog_id)
        desk = self.factory.desk
        if self.operator and desk is not None:  # on a cluster node the answer may be a Deferred
            return then(desk.assigned_to(dialog_id),
                        lambda holder: self._replay_of(holder, dialog_id, after))
        return self._replay_of(None, dialog_id, after)

    def _replay_of(self, holder: str | None, dialog_id: str, after: int) -> Any:
        if holder is not None and holder == self.user_id:
            return self.factory.gateway.router.replay(dialog_id, after, MAX_REPLAY)
        try:  # a cluster node's NotFound arrives in a Deferred: _problem
            return self.factory.gateway.replay(self.user_id, dialog_id, after)
        except NotFound:
            raise BadEvent(codes.BAD_REQUEST, "no such dialog of yours", dialog_id) from None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class ChatSocketFactory(WebSocketServerFactory):
    protocol = ChatSocket  # type: ignore[assignment]  # autobahn types it loosely

    def __init__(self, gateway: WebGateway, auth: Authenticator, registry: ConnectionRegistry,
                 clock: IReactorTime, *, rate: float = DEFAULT_RATE, max_frame: int,
                 ping: float = DEFAULT_PING, pong: float = DEFAULT_PONG,
                 desk: IOperatorDesk | None = None) -> None:
        super().__init__(reactor=clock)
        self.desk = desk
        self.gateway = gateway
        self.auth = auth
        self.registry = registry
        self.clock = clock
        self.rate = rate
        self.ids = itertools.count(1)
        self.setProtocolOptions(
            maxMessagePayloadSize=max_frame,
            maxFramePayloadSize=max_frame,
            autoPingInterval=ping,
            autoPingTimeout=pong,
            # close with a handshake so the 2004 sent just before is delivered
            failByDrop=False,
        )
        gateway.pushers.append(registry)
