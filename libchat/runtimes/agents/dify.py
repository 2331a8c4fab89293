"""The Dify chat-app client (docs/agents.md, Dify's "chat-messages" API).

``POST {base_url}/chat-messages`` with ``inputs``, ``query``,
``response_mode``, ``conversation_id`` ("" at first), ``user`` and ``files``
(the 1001's image attachments given by URL, as ``remote_url``). Blocking: the
JSON ``answer``. Streaming: SSE ``data:`` events; ``message`` and
``agent_message`` deltas are joined, ``message_replace`` replaces the text so
far, ``message_file`` adds an attachment, ``message_end`` ends the turn,
``error`` fails it; ``ping``, ``workflow_*``, ``node_*`` and anything else are
ignored. A 404 for a kept conversation starts a new one, once. A stop is
``POST /chat-messages/{task_id}/stop`` ``{"user"}``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import treq
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.runtimes.agents.client import (
    AGENT_ERROR, PROTOCOL, AgentAnswer, AgentError, AgentTurn, IAgentClient)
from libchat.runtimes.agents.http import Exchange, collector, connection_pool, error_of
from libchat.runtimes.agents.settings import DEFAULT_TIMEOUT
from libchat.runtimes.agents.sse import SSEError, SSEParser


def image_files(attachments: tuple[dict[str, Any], ...]) -> list[dict[str, str]]:
    """Dify ``files`` for the attachments that are images with an http(s) URL."""
    files = []
    for a in attachments:
        url, kind = a.get("url"), str(a.get("type") or a.get("mime") or "")
        if isinstance(url, str) and url.startswith(("http://", "https://")) \
                and (kind == "image" or kind.startswith("image/")):
            files.append({"type": "image", "transfer_method": "remote_url", "url": url})
    return files


class StreamMerger:
    """Dify's streamed events into one answer (pure: fed decoded events)."""

    def __init__(self, on_task: Callable[[str, str | None], None]) -> None:
        self.on_task = on_task
        self.text = ""
        self.attachments: list[dict[str, Any]] = []
        self.conversation_id: str | None = None
        self.task_id: str | None = None
        self.ended = False

    def event(self, data: dict[str, Any]) -> None:
        """One ``data:`` object; raises AgentError for an ``error`` event."""
        kind = str(data.get("event", ""))
        if data.get("task_id") and data.get("task_id") != self.task_id:
            self.task_id = str(data["task_id"])
            self.conversation_id = data.get("conversation_id") or self.conversation_id
            self.on_task(self.task_id, self.conversation_id)
        if data.get("conversation_id"):
            self.conversation_id = str(data["conversation_id"])
        if kind in ("message", "agent_message"):
            self.text += str(data.get("answer") or "")
        elif kind == "message_replace":
            self.text = str(data.get("answer") or "")
        elif kind == "message_file":
            url = data.get("url")
            if isinstance(url, str) and url:
                self.attachments.append({"type": "image" if data.get("type") == "image"
                                         else "file", "url": url})
        elif kind == "message_end":
            self.ended = True
        elif kind == "error":
            code, message = data.get("code"), data.get("message") or "error event"
            raise AgentError(AGENT_ERROR, f"{code}: {message}" if code else str(message),
                             status=data.get("status") if isinstance(data.get("status"), int)
                             else None)

    def answer(self) -> AgentAnswer:
        return AgentAnswer(self.text, tuple(self.attachments), self.conversation_id)


@implementer(IAgentClient)
class DifyClient:
    def __init__(self, section: dict[str, Any], api_key: str, clock: IReactorTime,
                 treq_module: Any = treq) -> None:
        self.base = str(section.get("base_url", "https://api.dify.ai/v1")).rstrip("/")
        self.streaming = section.get("response_mode", "streaming") == "streaming"
        self.inputs = dict(section.get("inputs") or {})
        self.timeout = float(section.get("timeout", DEFAULT_TIMEOUT))
        self.clock, self.treq = clock, treq_module
        self.pool = connection_pool(clock, int(section.get("max_concurrency", 16)))
        self._auth = f"Bearer {api_key}"

    def __repr__(self) -> str:  # never the key
        return f"<DifyClient {self.base}>"

    def body(self, turn: AgentTurn, conversation_id: str | None) -> dict[str, Any]:
        return {"inputs": self.inputs, "query": turn.query,
                "response_mode": "streaming" if self.streaming else "blocking",
                "conversation_id": conversation_id or "", "user": turn.user,
                "files": image_files(turn.attachments)}

    def turn(self, turn: AgentTurn, on_task: Callable[[str, str | None], None]) -> Any:
        current: list[defer.Deferred[Any]] = []

        def attempt(conversation_id: str | None) -> "defer.Deferred[Any]":
            d = self._once(turn, conversation_id, on_task)
            current[:] = [d]
            return d

        def abort(_: Any) -> None:
            if current:
                current[0].cancel()
        outer: defer.Deferred[Any] = defer.Deferred(abort)
        first = attempt(turn.conversation_id)

        def again(f: Failure) -> Any:
            if f.check(AgentError) and getattr(f.value, "status", None) == 404 \
                    and turn.conversation_id:
                return attempt(None)  # the kept conversation is gone: a new one, once
            return f
        first.addErrback(again)
        first.chainDeferred(outer)
        return outer

    def _once(self, turn: AgentTurn, conversation_id: str | None,
              on_task: Callable[[str, str | None], None]) -> "defer.Deferred[Any]":
        exchange = Exchange(self.treq, self.clock, self.timeout, self.pool)
        headers = {"Authorization": self._auth}
        if self.streaming:
            headers["Accept"] = "text/event-stream"
        merger = StreamMerger(on_task)

        def on_head(code: int, response: Any) -> Callable[[bytes], None]:
            if not 200 <= code < 300:
                add, got = collector(64 * 1024)

                def error_body(data: bytes) -> None:
                    if data:
                        add(data)
                    else:
                        raise error_of(code, got())
                return error_body
            ctype = (response.headers.getRawHeaders("content-type") or [""])[0]
            if "text/event-stream" in ctype:
                return self._stream(exchange, merger)
            return self._blocking(exchange, on_task)

        return exchange.run("POST", f"{self.base}/chat-messages", headers,
                            self.body(turn, conversation_id), on_head)

    def _stream(self, exchange: Exchange, merger: StreamMerger) -> Callable[[bytes], None]:
        def on_event(_: str, data: str) -> None:
            try:
                obj = json.loads(data)
            except ValueError:
                raise AgentError(PROTOCOL, "an SSE data line that is not JSON") from None
            if isinstance(obj, dict):
                merger.event(obj)
                if merger.ended:
                    exchange.finish(merger.answer())
        parser = SSEParser(on_event)

        def chunk(data: bytes) -> None:
            if not data:
                if merger.text or merger.attachments:
                    exchange.finish(merger.answer())  # ended without message_end
                    return
                raise AgentError(PROTOCOL, "the stream ended before message_end")
            try:
                parser.feed(data)
            except SSEError as e:
                raise AgentError(PROTOCOL, str(e)) from None
        return chunk

    def _blocking(self, exchange: Exchange,
                  on_task: Callable[[str, str | None], None]) -> Callable[[bytes], None]:
        add, got = collector()

        def chunk(data: bytes) -> None:
            if data:
                add(data)
                return
            try:
                obj = json.loads(got())
            except ValueError:
                raise AgentError(PROTOCOL, "a blocking answer that is not JSON") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
                raise AgentError(PROTOCOL, "a blocking answer without an answer")
            conversation = obj.get("conversation_id") or None
            if obj.get("task_id"):
                on_task(str(obj["task_id"]), conversation)
            exchange.finish(AgentAnswer(obj["answer"], (), conversation))
        return chunk

    def cancel(self, task_id: str, conversation_id: str | None, user: str) -> Any:
        exchange = Exchange(self.treq, self.clock, min(self.timeout, 10.0), self.pool)

        def on_head(code: int, response: Any) -> Callable[[bytes], None]:
            add, got = collector(64 * 1024)

            def chunk(data: bytes) -> None:
                if data:
                    add(data)
                elif not 200 <= code < 300:
                    raise error_of(code, got())
            return chunk
        return exchange.run("POST", f"{self.base}/chat-messages/{task_id}/stop",
                            {"Authorization": self._auth}, {"user": user}, on_head)
