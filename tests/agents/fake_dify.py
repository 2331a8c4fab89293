"""A fake Dify chat app on loopback, answering like the real service.

Shapes recorded from Dify's chat-messages API: streaming answers are
``data: {...}\\n\\n`` chunks (``message`` deltas, ``message_file``,
``message_end`` with ``metadata``) with ``event: ping\\n\\n`` keep-alives and
``workflow_*``/``node_*`` noise between; blocking answers are one JSON
object; errors are ``{"code","message","status"}`` with the HTTP status.

Every answer is ``echo: <query>`` so tests can check order. Tests script the
next requests (``POST /_script`` ``{"steps": [...]}``; a step is one of
``{"status": 429}``, ``{"error_event": "..."}``, ``{"slow": true}``,
``{"delay": s}``, ``{"silent": true}``) and read what it saw at ``GET
/_state``. Run it as ``python -m tests.agents.fake_dify [--key K]``: it prints
``fake dify listening on <port>`` and serves on 127.0.0.1 until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from itertools import count
from typing import Any

from klein import Klein
from twisted.internet import defer, task
from twisted.web.server import Site


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


PING = b"event: ping\n\n"


class FakeDify:
    app = Klein()

    def __init__(self, clock: Any, key: str = "test-key") -> None:
        self.clock, self.key = clock, key
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.stops: list[dict[str, Any]] = []
        self.conversations: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self._ids = count(1)
        self._slow: dict[str, defer.Deferred[None]] = {}

    def _json(self, request: Any, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return json.dumps(body).encode()

    def _error(self, request: Any, status: int, code: str, message: str) -> bytes:
        return self._json(request, status, {"code": code, "message": message, "status": status})

    def _until_gone(self, request: Any, seconds: float,
                    also: defer.Deferred[None] | None = None) -> defer.Deferred[Any]:
        """Wait until the client goes, ``also`` fires, or ``seconds`` pass
        (no timer is left behind)."""
        done: defer.Deferred[Any] = defer.Deferred()
        timer = self.clock.callLater(seconds, lambda: done.called or done.callback(None))

        def end(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)
        request.notifyFinish().addBoth(end)
        if also is not None:
            also.addBoth(end)
        return done

    # -- the test's controls -------------------------------------------------------

    @app.route("/_script", methods=["POST"])
    def add_script(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        self.script.extend(body.get("steps", []))
        if "delay" in body:
            self.delay = float(body["delay"])
        return b"{}"

    @app.route("/_state", methods=["GET"])
    def state(self, request: Any) -> bytes:
        return self._json(request, 200, {
            "requests": self.requests, "stops": self.stops, "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight, "script_left": len(self.script)})

    # -- Dify ---------------------------------------------------------------------

    @app.route("/v1/chat-messages/<task_id>/stop", methods=["POST"])
    def stop(self, request: Any, task_id: str) -> bytes:
        if request.getHeader("authorization") != f"Bearer {self.key}":
            return self._error(request, 401, "unauthorized", "Access token is invalid")
        self.stops.append({"task_id": task_id, **json.loads(request.content.read())})
        slow = self._slow.pop(task_id, None)
        if slow is not None and not slow.called:
            slow.callback(None)
        return self._json(request, 200, {"result": "success"})

    @app.route("/v1/chat-messages", methods=["POST"])
    async def chat(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        auth = request.getHeader("authorization")
        self.requests.append({"body": body, "auth_ok": auth == f"Bearer {self.key}"})
        step = self.script.popleft() if self.script else {}
        if auth != f"Bearer {self.key}" or step.get("status") == 401:
            return self._error(request, 401, "unauthorized", "Access token is invalid")
        if step.get("status"):
            status = int(step["status"])
            return self._error(request, status, step.get("code", "too_many_requests" if
                                                         status == 429 else "internal"),
                               step.get("message", f"fake status {status}"))
        conversation = body.get("conversation_id") or ""
        if conversation and conversation not in self.conversations:
            return self._error(request, 404, "not_found", "Conversation Not Exists.")
        if not conversation:
            conversation = f"conv-{next(self._ids)}"
            self.conversations.add(conversation)
        task_id, message_id = f"task-{next(self._ids)}", f"msg-{next(self._ids)}"
        answer = f"echo: {body.get('query', '')}"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = float(step.get("delay", self.delay))
            if delay:
                await task.deferLater(self.clock, delay, lambda: None)
            if body.get("response_mode") != "streaming":
                return self._json(request, 200, {
                    "event": "message", "task_id": task_id, "id": message_id,
                    "message_id": message_id, "conversation_id": conversation,
                    "mode": "chat", "answer": answer, "metadata": {"usage": {}},
                    "created_at": 1705407629})
            request.setHeader("content-type", "text/event-stream")
            base = {"task_id": task_id, "message_id": message_id, "id": message_id,
                    "conversation_id": conversation, "created_at": 1705407629}
            request.write(sse({"event": "workflow_started", "task_id": task_id,
                               "workflow_run_id": "wr", "data": {}}))
            request.write(PING)
            if step.get("silent"):
                await self._until_gone(request, 60)
                return b""
            if step.get("error_event"):
                request.write(sse({"event": "error", "task_id": task_id,
                                   "message_id": message_id, "status": 400,
                                   "code": "invalid_param", "message": step["error_event"]}))
                return b""
            third = max(1, len(answer) // 3)
            parts = [answer[:third], answer[third:2 * third], answer[2 * third:]]
            request.write(sse({"event": "message", "answer": parts[0], **base}))
            if step.get("slow"):
                stopped: defer.Deferred[None] = defer.Deferred()
                self._slow[task_id] = stopped
                await self._until_gone(request, 30, stopped)
                return b""
            request.write(PING)
            request.write(sse({"event": "node_finished", "task_id": task_id, "data": {}}))
            request.write(sse({"event": "agent_message", "answer": parts[1], **base}))
            request.write(sse({"event": "message", "answer": parts[2], **base}))
            if "picture" in answer:
                request.write(sse({"event": "message_file", "id": "f1", "type": "image",
                                   "belongs_to": "assistant", "url": "https://files/f1.png",
                                   "conversation_id": conversation}))
            request.write(sse({"event": "message_end", "metadata": {"usage": {}}, **base}))
            request.write(sse({"event": "workflow_finished", "task_id": task_id, "data": {}}))
            return b""
        finally:
            self.in_flight -= 1


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import endpoints, reactor

    parser = argparse.ArgumentParser()
    parser.add_argument("--key", default="test-key")
    args = parser.parse_args(argv)
    fake = FakeDify(reactor, args.key)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, backlog=1024, interface="127.0.0.1")

    def listening(port: Any) -> None:
        print(f"fake dify listening on {port.getHost().port}", flush=True)
    endpoint.listen(Site(fake.app.resource())).addCallback(listening)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
