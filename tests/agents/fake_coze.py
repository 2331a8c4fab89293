"""A fake Coze v3 chat API on a real loopback port, answering in the shapes
the real service uses (coze-py's models and the v3 docs): streamed
``event:NAME\\ndata:{json}\\n\\n`` pairs, ``{"code","msg","data"}`` JSON
bodies, ``/v3/chat/retrieve``, ``/v3/chat/message/list``, ``/v3/chat/cancel``.

Every request is recorded (:attr:`FakeCoze.requests`). Script it through
attributes before a turn: ``statuses`` (HTTP codes for the next creates),
``stream`` (the events of the next streamed chat: ``(name, data)`` pairs,
``Pause(seconds)`` or ``STALL``), ``polls`` (the statuses successive
retrieves report), ``reply`` / ``messages`` (the answer)."""

from __future__ import annotations

import json
from typing import Any

import attrs
from klein import Klein
from twisted.internet import defer, task
from twisted.web.server import Site


@attrs.frozen
class Pause:
    seconds: float


STALL = object()   # hold the stream open, send nothing more


@attrs.frozen
class Recorded:
    method: str
    path: str
    args: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


class _Site(Site):
    """A Site that can drop every connection it holds (so stop() is clean)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.channels: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self.channels.append(channel)
        return channel


class FakeCoze:
    app = Klein()

    def __init__(self, reactor: Any, clock: Any = None, reply: str = "Hello there!",
                 key: str | None = None) -> None:
        self.reactor, self.clock = reactor, clock or reactor
        self.key = key  # with a key, a request without "Bearer <key>" gets Coze's 401
        self.requests: list[Recorded] = []
        self.statuses: list[int] = []          # HTTP statuses for the next creates
        self.stream: list[Any] | None = None   # None: the standard sequence for `reply`
        self.polls: list[str] = ["in_progress", "completed"]
        self.reply = reply
        self.messages: list[dict[str, Any]] | None = None  # None: the standard list
        self.last_error = {"code": 0, "msg": ""}
        self.create_answer: dict[str, Any] | None = None   # a JSON body for creates
        self.dropped = 0                       # streams the client hung up on
        self._next = 7400000000000000001
        self._chats: dict[str, dict[str, Any]] = {}
        self._waiters: list[tuple[str, int, defer.Deferred[None]]] = []
        self._port: Any = None
        self._site: _Site | None = None

    # -- running

    async def start(self) -> str:
        self._site = _Site(self.app.resource())
        self._port = self.reactor.listenTCP(0, self._site, interface="127.0.0.1")
        return f"http://127.0.0.1:{self._port.getHost().port}"

    async def stop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            await port.stopListening()
        for channel in self._site.channels if self._site else []:
            if getattr(channel, "transport", None) is not None:
                channel.transport.abortConnection()

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def requested(self, path: str, n: int = 1) -> defer.Deferred[None]:
        """Fires once ``path`` has been requested ``n`` times."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.count(path) >= n:
            d.callback(None)
        else:
            self._waiters.append((path, n, d))
        return d

    # -- shapes

    def _id(self) -> str:
        self._next += 1
        return str(self._next)

    def chat(self, chat_id: str, conversation_id: str, status: str) -> dict[str, Any]:
        chat = {"id": chat_id, "conversation_id": conversation_id, "bot_id": "7300000000000000001",
                "created_at": 1718000000, "last_error": self.last_error if status == "failed"
                else {"code": 0, "msg": ""}, "status": status}
        if status == "completed":
            chat.update(completed_at=1718000003,
                        usage={"token_count": 120, "output_count": 20, "input_count": 100})
        return chat

    def message(self, chat: dict[str, Any], kind: str, content: str,
                content_type: str = "text", message_id: str | None = None) -> dict[str, Any]:
        return {"id": message_id or self._id(), "conversation_id": chat["conversation_id"],
                "bot_id": chat["bot_id"], "chat_id": chat["id"], "role": "assistant",
                "type": kind, "content": content, "content_type": content_type,
                "created_at": 1718000001, "updated_at": 1718000002}

    def standard_stream(self, chat: dict[str, Any]) -> list[Any]:
        """created -> in_progress -> deltas -> completed -> (verbose,
        follow_up) -> chat.completed -> done, as the real service sends."""
        answer = self.message(chat, "answer", self.reply)
        third = max(1, len(self.reply) // 3)
        pieces = [self.reply[i:i + third] for i in range(0, len(self.reply), third)]
        verbose = json.dumps({"msg_type": "generate_answer_finish", "data": "",
                              "from_module": None, "from_unit": None})
        return ([("conversation.chat.created", {**chat, "status": "created"}),
                 ("conversation.chat.in_progress", {**chat, "status": "in_progress"})]
                + [("conversation.message.delta", {**answer, "content": p}) for p in pieces]
                + [("conversation.message.completed", answer),
                   ("conversation.message.completed", self.message(chat, "verbose", verbose)),
                   ("conversation.message.completed",
                    self.message(chat, "follow_up", "Anything else?")),
                   ("conversation.chat.completed", self.chat(chat["id"], chat["conversation_id"],
                                                             "completed")),
                   ("done", '"[DONE]"')])

    # -- routes

    def _record(self, request: Any) -> Any:
        raw = request.content.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        args = {k.decode(): v[-1].decode() for k, v in request.args.items()}
        headers = {k.decode().lower(): v[-1].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        path = request.path.decode()
        self.requests.append(Recorded(request.method.decode(), path, args, headers, body,
                                      self.clock.seconds()))
        for waiter in list(self._waiters):
            if waiter[0] == path and self.count(path) >= waiter[1]:
                self._waiters.remove(waiter)
                waiter[2].callback(None)
        return body

    def _json(self, request: Any, obj: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return json.dumps(obj).encode()

    @app.route("/v3/chat", methods=["POST"])
    async def create(self, request: Any) -> Any:
        body = self._record(request)
        if self.key is not None and (request.getHeader("authorization")
                                     != f"Bearer {self.key}"):
            return self._json(request, {"code": 4101, "msg": "The token you entered is "
                                        "incorrect. Please double-check and try again."}, 401)
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            return self._json(request, {"code": 4100 if status == 401 else 5000,
                                        "msg": f"fake says {status}"}, status)
        if self.create_answer is not None:
            return self._json(request, self.create_answer)
        conversation_id = request.args.get(b"conversation_id", [b""])[-1].decode() or self._id()
        chat = self.chat(self._id(), conversation_id, "created")
        self._chats[chat["id"]] = {"chat": chat, "polls": list(self.polls)}
        if not body.get("stream"):
            return self._json(request, {"code": 0, "msg": "", "data": {**chat,
                                                                       "status": "in_progress"}})
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        gone = request.notifyFinish()
        gone.addErrback(self._drop)
        for item in self.standard_stream(chat) if self.stream is None else self.stream:
            if gone.called:
                return None
            if item is STALL:
                await gone
                return None
            if isinstance(item, Pause):
                await task.deferLater(self.reactor, item.seconds, lambda: None)
                continue
            name, data = item
            text = data if isinstance(data, str) else json.dumps(data)
            request.write(f"event:{name}\ndata:{text}\n\n".encode())
        return b""

    def _drop(self, _: Any) -> None:
        self.dropped += 1

    @app.route("/v3/chat/retrieve", methods=["POST"])
    def retrieve(self, request: Any) -> Any:
        self._record(request)
        kept = self._chats.get(request.args.get(b"chat_id", [b""])[-1].decode())
        if kept is None:
            return self._json(request, {"code": 4200, "msg": "chat not found"})
        status = kept["polls"].pop(0) if len(kept["polls"]) > 1 else kept["polls"][0]
        chat = self.chat(kept["chat"]["id"], kept["chat"]["conversation_id"], status)
        return self._json(request, {"code": 0, "msg": "", "data": chat})

    @app.route("/v3/chat/message/list", methods=["GET"])
    def message_list(self, request: Any) -> Any:
        self._record(request)
        kept = self._chats.get(request.args.get(b"chat_id", [b""])[-1].decode())
        if kept is None:
            return self._json(request, {"code": 4200, "msg": "chat not found"})
        chat = kept["chat"]
        messages = self.messages if self.messages is not None else [
            self.message(chat, "function_call", '{"name":"lookup","arguments":{}}'),
            self.message(chat, "tool_output", '{"result":"42"}'),
            self.message(chat, "answer", self.reply),
            self.message(chat, "follow_up", "Anything else?")]
        return self._json(request, {"code": 0, "msg": "", "data": messages})

    @app.route("/v3/chat/cancel", methods=["POST"])
    def cancel(self, request: Any) -> Any:
        body = self._record(request) or {}
        chat = self.chat(str(body.get("chat_id")), str(body.get("conversation_id")), "canceled")
        return self._json(request, {"code": 0, "msg": "", "data": chat})
