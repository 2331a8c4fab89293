"""The memory API for programs (docs/protocol.md §7), a Klein app as a class.

The bearer token alone decides who is asking: the dialog, the user and the
program of one live instance. Memory is scoped per (user, program), so a token
can never read another user's values, nor another program's.
"""

from __future__ import annotations

from typing import Any, Callable

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from libchat.protocol import codes
from libchat.interfaces import IRouter, IStore, TokenInfo, Unavailable
from libchat.jsonc import JSONDecodeError, dumps, loads

MAX_BODY = 1024 * 1024
MAX_KEY = 256
SAVE = "save_tool_memory"
QUERY = "query_tool_memory"


class ApiError(Exception):
    """A 4xx answer with a JSON ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def render(self, request: IRequest) -> bytes:
        return json_response(request, self.status, {"code": self.code, "message": self.message})


def json_response(request: IRequest, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return dumps(body)


def json_body(request: IRequest, max_body: int, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body (413 over ``max_body``, 400 if it is not
    one); an empty body is ``{}`` unless ``required``. Shared with the REST API."""
    content = request.content
    content.seek(0, 2)
    size = content.tell()
    if getattr(request, "too_large", False) or size > max_body:  # see libchat.doors.http
        raise ApiError(413, codes.MSG_TOO_LARGE, f"body over {max_body} bytes")
    content.seek(0)
    if size == 0 and not required:
        return {}
    try:
        body = loads(content.read())
    except (JSONDecodeError, ValueError, UnicodeDecodeError):
        raise ApiError(400, codes.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, codes.BAD_REQUEST, "body must be a JSON object")
    return body


class MemoryAPI:
    """``POST /memory`` with the seed's 3000 bodies."""

    app = Klein()
    log = Logger()

    def __init__(self, tokens: IRouter, store: IStore, now: Callable[[], float]) -> None:
        self.tokens = tokens  # only IRouter.token_info is asked
        self.store = store
        self.now = now

    def _caller(self, request: IRequest) -> TokenInfo:
        header = request.getHeader("authorization") or ""
        scheme, _, token = header.partition(" ")
        info = self.tokens.token_info(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            raise ApiError(401, "UNAUTHORIZED", "missing or unknown bearer token")
        return info

    def _body(self, request: IRequest) -> dict[str, Any]:
        ctype = (request.getHeader("content-type") or "application/json").split(";")[0].strip()
        if ctype.lower() not in ("application/json", "text/json", ""):
            raise ApiError(415, codes.BAD_REQUEST, "Content-Type must be application/json")
        return json_body(request, MAX_BODY)

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Any) -> bytes:
        return failure.value.render(request)

    @app.handle_errors(Unavailable)
    def _unavailable(self, request: IRequest, failure: Any) -> bytes:
        # CONTRACT §14: never a false success while Redis cannot confirm
        return json_response(request, 503, {"code": codes.INTERNAL_ERROR,
                                            "message": "shared storage unavailable; try again"})

    @app.handle_errors(Exception)
    def _internal_error(self, request: IRequest, failure: Any) -> bytes:
        self.log.failure("memory API request failed", failure)
        return json_response(request, 500, {"code": codes.INTERNAL_ERROR,
                                            "message": "internal error; see the server log"})


    @app.route("/memory", methods=["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    def wrong_method(self, request: IRequest) -> bytes:
        request.setHeader(b"Allow", b"POST")
        return json_response(request, 405, {"code": "METHOD_NOT_ALLOWED",
                                            "message": "use POST /memory"})

    @app.route("/memory", methods=["POST"])
    @defer.inlineCallbacks
    def memory(self, request: IRequest) -> Any:
        caller = self._caller(request)
        body = self._body(request)
        if body.get("event_type") != codes.MEMORY:
            raise ApiError(400, codes.BAD_REQUEST, "event_type must be 3000")
        action, key = body.get("action"), body.get("key")
        if action not in (SAVE, QUERY):
            raise ApiError(400, codes.BAD_REQUEST,
                           f"action must be {SAVE} or {QUERY}")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise ApiError(400, codes.BAD_REQUEST, f"key must be a string of 1..{MAX_KEY} chars")
        user_id = body.get("user_id", caller.user_id)
        if not isinstance(user_id, str):
            raise ApiError(400, codes.BAD_REQUEST, "user_id must be a string")
        if user_id != caller.user_id:
            raise ApiError(403, "FORBIDDEN", "user_id is not the token's user")
        if action == QUERY:
            # a value on one node; a Deferred from Redis on a cluster node
            value = yield self.store.memory_get(caller.user_id, caller.program, key)
            return json_response(request, 200, {"event_type": codes.MEMORY,
                                                "action": "get_tool_memory",
                                                "key": key, "value": value})
        if "value" not in body:
            raise ApiError(400, codes.BAD_REQUEST, "save_tool_memory needs a value")
        yield self.store.memory_set(caller.user_id, caller.program, key, body["value"],
                                    caller.dialog_id, self.now())
        self.log.debug("memory {program}/{key} saved for {user_id}", program=caller.program,
                       key=key, user_id=caller.user_id)
        return json_response(request, 200, {"event_type": codes.MEMORY, "action": SAVE,
                                            "key": key, "ok": True})

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return json_response(request, 200, {"ok": True})

    @app.route("/", branch=True)
    def not_found(self, request: IRequest) -> bytes:
        return json_response(request, 404, {"code": "NOT_FOUND", "message": "no such resource"})

