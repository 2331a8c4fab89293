"""The REST session API (docs/web.md), a Klein app mounted at ``/api/chat/``.

A session is a web dialog: what is posted here is routed exactly like a
WebSocket 1001/1002 (through :class:`~libchat.doors.web.gateway.WebGateway`), and
replies are read back from the transcript, optionally long-polling until one
exists. ``openapi.json`` beside this module describes it; a test holds the two
together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from libchat.interfaces import Unavailable
from libchat.protocol import codes
from libchat.protocol.events import BadEvent, check_upstream
from libchat.doors.memory_api import ApiError, json_body, json_response
from libchat.doors.web.auth import Authenticator, Unauthorized
from libchat.doors.web.gateway import MAX_REPLAY, NotFound, WebGateway
from libchat.doors.web.ws import RateLimiter

MAX_WAIT = 30.0  # docs/web.md: wait is clamped to 30 s
MAX_LIMITERS = 10_000


def _not_found(session_id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no session {session_id} of yours")


class ChatAPI:
    app = Klein()
    log = Logger()

    def __init__(self, gateway: WebGateway, auth: Authenticator, now: Callable[[], float], *,
                 max_body: int, rate: float) -> None:
        self.gateway = gateway
        self.auth = auth
        self.now = now
        self.max_body = max_body
        self.rate = rate
        self._limiters: dict[str, RateLimiter] = {}

    # -- plumbing ----------------------------------------------------------------

    def _user(self, request: IRequest) -> str:
        try:
            return self.auth.rest_user({"authorization": request.getHeader("authorization"),
                                        "x-user-id": request.getHeader("x-user-id")})
        except Unauthorized as e:
            raise ApiError(401, "UNAUTHORIZED", str(e)) from None

    def _body(self, request: IRequest, required: bool = True) -> dict[str, Any]:
        return json_body(request, self.max_body, required)

    def _limit(self, user_id: str) -> None:
        limiter = self._limiters.get(user_id)
        if limiter is None:
            if len(self._limiters) >= MAX_LIMITERS:  # forget those with a full bucket
                self._limiters = {u: lim for u, lim in self._limiters.items()
                                  if lim.tokens < lim.burst}
            limiter = self._limiters[user_id] = RateLimiter(self.rate, self.now)
        if not limiter.allow():
            raise ApiError(429, codes.RATE_LIMIT,
                           f"over {self.rate:g} messages per second; send it again later")

    @defer.inlineCallbacks
    def _session(self, user_id: str, session_id: str) -> Any:
        try:
            yield self.gateway.info(user_id, session_id)
        except NotFound:
            raise _not_found(session_id) from None

    @defer.inlineCallbacks
    def _route(self, event: dict[str, Any]) -> Any:
        """Validate and route a 1001/1002 like any front door; returns the
        event as routed (with its generated ``message_id``) and its seq."""
        try:
            event = check_upstream(event)
        except BadEvent as e:
            raise ApiError(400, e.code, e.message) from None
        receipt = yield self.gateway.receive(event)
        answer = receipt.error
        if answer is not None:
            status = {codes.BUSY: 429, codes.INTERNAL_ERROR: 503}.get(answer.get("code"), 400)
            raise ApiError(status, answer["code"], answer["message"])
        return event, receipt.seq

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Any) -> bytes:
        return failure.value.render(request)

    @app.handle_errors(Unavailable)
    def _unavailable(self, request: IRequest, failure: Any) -> bytes:
        return json_response(request, 503, {"code": codes.INTERNAL_ERROR,
                                            "message": "shared storage unavailable; try again"})

    @app.handle_errors(HTTPException)
    def _http_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(e.code, codes.BAD_REQUEST)
        if e.code == 405 and getattr(e, "valid_methods", None):
            request.setHeader(b"Allow", ", ".join(e.valid_methods).encode("ascii"))
        return json_response(request, e.code, {"code": code, "message": e.description})

    @app.handle_errors(Exception)
    def _internal_error(self, request: IRequest, failure: Any) -> bytes:
        self.log.failure("REST request failed", failure)
        return json_response(request, 500, {"code": codes.INTERNAL_ERROR,
                                            "message": "internal error; see the server log"})

    # -- routes ------------------------------------------------------------------

    @app.route("/sessions", methods=["POST"])
    @defer.inlineCallbacks
    def create(self, request: IRequest) -> Any:
        user_id = self._user(request)
        body = self._body(request, required=False)
        # like an explicit intent on a frame: one naming no program is
        # answered with a 2003 when the first message arrives (docs/protocol.md §2, docs/protocol.md §2-3)
        intent = body.get("intent")
        try:
            session_id = yield self.gateway.open_session(user_id, intent)
        except Unavailable:
            raise ApiError(503, codes.INTERNAL_ERROR, "shared storage unavailable; "
                           "try again") from None
        except ValueError as e:
            raise ApiError(400, codes.BAD_REQUEST, str(e)) from None
        request.setHeader(b"Location", f"/api/chat/sessions/{session_id}".encode("ascii"))
        return json_response(request, 201, {"session_id": session_id, "user_id": user_id,
                                            "intent": intent})

    @app.route("/sessions/<string:session_id>/messages", methods=["POST"])
    @defer.inlineCallbacks
    def post_message(self, request: IRequest, session_id: str) -> Any:
        user_id = self._user(request)
        yield self._session(user_id, session_id)
        body = self._body(request)
        self._limit(user_id)
        event: dict[str, Any] = {
            "event_type": codes.USER_MESSAGE, "dialog_id": session_id, "user_id": user_id,
            "messages": {"content": body.get("content"),
                         "attachments": body.get("attachments")},
        }
        if "message_id" in body:
            event["message_id"] = body["message_id"]
        event, seq = yield self._route(event)
        return json_response(request, 202, {"message_id": event["message_id"], "seq": seq})

    @app.route("/sessions/<string:session_id>/messages", methods=["GET"])
    @defer.inlineCallbacks
    def get_messages(self, request: IRequest, session_id: str) -> Any:
        user_id = self._user(request)
        yield self._session(user_id, session_id)
        after = _number(request, "after", int, 0)
        wait = min(_number(request, "wait", float, 0.0), MAX_WAIT)
        deadline = self.now() + wait
        while True:
            # the waiter is there before the read: on a node that does not
            # own the dialog the read is a Redis round trip, and an entry
            # appended meanwhile must wake this poll, not leave it to sleep
            woken = self.gateway.wait(session_id, wait) if wait > 0 else None
            try:
                entries = yield self.gateway.entries(user_id, session_id, after, MAX_REPLAY)
            except BaseException:
                _drop(woken)
                raise
            if entries or woken is None:
                _drop(woken)
                break
            yield woken  # woken by any new entry; one at or before ``after`` waits on
            wait = deadline - self.now()
        return json_response(request, 200, {"messages": entries})

    @app.route("/sessions/<string:session_id>/close", methods=["POST"])
    @defer.inlineCallbacks
    def close(self, request: IRequest, session_id: str) -> Any:
        user_id = self._user(request)
        yield self._session(user_id, session_id)
        yield self._route({"event_type": codes.CLIENT_CLOSE, "dialog_id": session_id,
                     "user_id": user_id})
        return json_response(request, 200, {"ok": True})


def _drop(waiter: defer.Deferred[None] | None) -> None:
    """Forget a long-poll waiter no longer wanted."""
    if waiter is not None and not waiter.called:
        waiter.addErrback(lambda f: f.trap(defer.CancelledError))
        waiter.cancel()


def _number(request: IRequest, name: str, kind: Callable[[str], Any], default: Any) -> Any:
    raw = request.args.get(name.encode("ascii"))
    if not raw:
        return default
    try:
        value = kind(raw[0].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, codes.BAD_REQUEST, f"{name} must be a number") from None
    if not value >= 0:  # also refuses NaN
        raise ApiError(400, codes.BAD_REQUEST, f"{name} must be >= 0")
    return value
