"""The Coze v3 chat API as an :class:`IAgentClient` (docs/agents.md).

One turn is ``POST {base_url}/v3/chat[?conversation_id=]`` with the bot, the
user and the 1001's text. Streamed (``"stream": true``, the default) the
answer arrives as ``event:``/``data:`` pairs, read incrementally with
:class:`~libchat.runtimes.agents.sse.SSEParser` and merged by
:class:`ChatStream`; otherwise the chat is polled with ``/v3/chat/retrieve``
(at most once a second) and its messages read from ``/v3/chat/message/list``.

What the user is shown (:func:`answer_parts`): only messages of ``type``
``answer``; ``function_call``, ``tool_output``/``tool_response``,
``verbose`` and ``follow_up`` never are. A ``text`` answer is its content;
an ``object_string`` answer (a JSON list of ``{"type": "text"|"image"|"file",
"text"|"file_url"|"file_id"|"name"}``) gives its text parts joined by newlines
and an attachment per image/file part with a URL
(``{"type": "image"|"file", "option": {"url"}}``, plus ``file_id`` / ``name``
when given); a markdown image ``![alt](https://...)`` in the text also becomes
an image attachment (the text keeps it). A ``card`` answer (a Coze card
template, meaningless outside Coze) is not shown. Several answer messages
(a workflow with message nodes) are joined with a blank line.

The user's message is sent as ``content_type`` ``text`` (docs/agents.md): a
1001's attachments are not forwarded. A non-streamed chat still in progress
after ``poll_timeout`` (default 300 s) is cancelled and fails as TIMEOUT.

The key goes only into the ``Authorization`` header: never into a log line
or an :class:`AgentError` detail."""

from __future__ import annotations

import json
import re
from typing import Any, Callable
from urllib.parse import urlencode

import treq as _treq
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from .http import Exchange, collector, connection_pool
from .client import (AGENT_ERROR, HTTP_ERROR, PROTOCOL, TIMEOUT, AgentAnswer, AgentError,
                     AgentTurn, IAgentClient)
from .sse import SSEError, SSEParser

log = Logger()

DEFAULT_TIMEOUT = 100.0       # s without a byte (docs/agents.md)
DEFAULT_POLL_TIMEOUT = 300.0  # s a non-streamed chat may stay in progress
POLL_INTERVAL = 1.0           # s between two retrieves: Coze asks for at most one a second
MAX_LINE = 1 << 20            # an SSE line over 1 MiB fails the turn
MAX_BODY = 4 << 20            # a JSON answer over 4 MiB fails the turn
_RUNNING = ("created", "in_progress")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\((https?://[^)\s]+)\)")


def answer_parts(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text and attachments one ``answer`` message shows the user."""
    content, kind = message.get("content") or "", message.get("content_type") or "text"
    attachments: list[dict[str, Any]] = []
    if not isinstance(content, str) or kind == "card":
        return "", []
    if kind == "object_string":
        try:
            parts = json.loads(content)
        except ValueError:
            parts = None
        if isinstance(parts, list):
            texts = []
            for part in parts:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") in ("image", "file") and part.get("file_url"):
                    attachment: dict[str, Any] = {"type": part["type"],
                                                  "option": {"url": part["file_url"]}}
                    for key in ("file_id", "name"):
                        if part.get(key):
                            attachment[key] = part[key]
                    attachments.append(attachment)
            content = "\n".join(texts)
    attachments += [{"type": "image", "option": {"url": url}}
                    for url in _MD_IMAGE.findall(content)]
    return content, attachments


def merge_answers(messages: list[dict[str, Any]], conversation_id: str | None) -> AgentAnswer:
    """One :class:`AgentAnswer` from the chat's answer messages, in order."""
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for message in messages:
        if message.get("type") != "answer":
            continue
        text, found = answer_parts(message)
        if text:
            texts.append(text)
        attachments += found
    return AgentAnswer("\n\n".join(texts), tuple(attachments), conversation_id)


def _chat_error(chat: dict[str, Any], what: str) -> AgentError:
    last = chat.get("last_error")
    last = last if isinstance(last, dict) else {}
    msg, code = last.get("msg") or what, last.get("code")
    return AgentError(AGENT_ERROR, f"coze chat {what}: {msg}" + (f" (code {code})" if code else ""))


def _load(data: str | bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise AgentError(PROTOCOL, f"coze {what} is not JSON") from None


class ChatStream:
    """The (event, data) pairs of one streamed chat, merged into one answer.

    ``conversation.chat.created`` names the chat (``on_task(chat_id,
    conversation_id)``); answer deltas are joined per message id, and a
    ``conversation.message.completed`` answer replaces its deltas;
    ``conversation.chat.failed``/``requires_action`` and ``error`` raise
    :class:`AgentError`; ``done`` ends the stream. Unknown events (audio
    deltas, future ones) are ignored."""

    def __init__(self, on_task: Callable[[str, str | None], None]) -> None:
        self._on_task = on_task
        self.chat_id: str | None = None
        self.conversation_id: str | None = None
        self.completed = False       # conversation.chat.completed seen
        self.done = False            # done seen
        self._order: list[str] = []  # answer message ids, first seen first
        self._deltas: dict[str, list[str]] = {}
        self._first: dict[str, dict[str, Any]] = {}   # each message's first event
        self._final: dict[str, dict[str, Any]] = {}   # its completed message

    def event(self, name: str, data: str) -> None:
        if self.done:
            return
        if name == "done":
            self.done = True
            return
        if name == "error":
            body = _load(data, "error event") if data.strip() else {}
            body = body if isinstance(body, dict) else {}
            code = body.get("code")
            raise AgentError(AGENT_ERROR, f"coze error event: {body.get('msg') or 'no message'}"
                             + (f" (code {code})" if code else ""))
        if not name.startswith(("conversation.chat.", "conversation.message.")):
            return
        obj = _load(data, f"{name} event")
        if not isinstance(obj, dict):
            raise AgentError(PROTOCOL, f"coze {name} event is not an object")
        if name.startswith("conversation.chat."):
            self._chat(name, obj)
        elif obj.get("type") == "answer":
            self._message(name, obj)

    def _chat(self, name: str, chat: dict[str, Any]) -> None:
        if self.chat_id is None and chat.get("id"):
            self.chat_id = str(chat["id"])
            self.conversation_id = chat.get("conversation_id") or None
            self._on_task(self.chat_id, self.conversation_id)
        if name == "conversation.chat.completed":
            self.completed = True
        elif name == "conversation.chat.failed":
            raise _chat_error(chat, "failed")
        elif name == "conversation.chat.requires_action":
            raise AgentError(AGENT_ERROR, "coze chat requires_action (tool outputs are not supported)")
        elif name == "conversation.chat.canceled":
            raise AgentError(AGENT_ERROR, "coze chat canceled")

    def _message(self, name: str, message: dict[str, Any]) -> None:
        key = str(message.get("id") or len(self._order))
        if key not in self._first:
            self._order.append(key)
            self._first[key], self._deltas[key] = message, []
        if name == "conversation.message.delta":
            if isinstance(message.get("content"), str):
                self._deltas[key].append(message["content"])
        elif name == "conversation.message.completed":
            self._final[key] = message

    def answer(self) -> AgentAnswer:
        """The merged answer; the stream must have completed (or said done)."""
        if not (self.done or self.completed):
            raise AgentError(PROTOCOL, "coze stream ended before the chat completed")
        messages = [self._final.get(key) or {**self._first[key], "content": "".join(self._deltas[key])}
                    for key in self._order]
        return merge_answers(messages, self.conversation_id)


@implementer(IAgentClient)
class CozeClient:
    """One Coze bot: ``section`` is the program's ``package.json`` ``"libchat"``
    object (``base_url``, ``bot_id``, ``stream`` default true, ``timeout``
    default 100 s, ``poll_timeout`` default 300 s); ``api_key`` is already
    read by the library."""

    def __init__(self, section: dict[str, Any], api_key: str, clock: Any,
                 treq_module: Any = _treq) -> None:
        self._base = str(section.get("base_url") or "https://api.coze.com").rstrip("/")
        self._bot_id = str(section["bot_id"])
        self._stream = bool(section.get("stream", True))
        self._timeout = float(section.get("timeout", DEFAULT_TIMEOUT))
        self._poll_timeout = float(section.get("poll_timeout", DEFAULT_POLL_TIMEOUT))
        self._key = api_key
        self._clock = clock
        self._treq = treq_module
        self._pool = connection_pool(clock, int(section.get("max_concurrency", 16)))

    def __repr__(self) -> str:  # never the key
        return f"<CozeClient bot {self._bot_id} at {self._base}>"

    def turn(self, turn: AgentTurn, on_task: Callable[[str, str | None], None]) -> Deferred[AgentAnswer]:
        return Deferred.fromCoroutine(self._turn(turn, on_task))

    def cancel(self, task_id: str, conversation_id: str | None, user: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._cancel(task_id, conversation_id))

    # -- one turn

    async def _turn(self, turn: AgentTurn, on_task: Callable[[str, str | None], None]) -> AgentAnswer:
        body = {"bot_id": self._bot_id, "user_id": turn.user, "stream": self._stream,
                "auto_save_history": True,
                "additional_messages": [{"role": "user", "content": turn.query,
                                         "content_type": "text"}]}
        params = {"conversation_id": turn.conversation_id} if turn.conversation_id else None
        chat = ChatStream(on_task)
        parser = SSEParser(chat.event, max_line=MAX_LINE)

        def on_ok(exchange: Exchange, response: Any) -> Callable[[bytes], None]:
            if not self._stream or not _is_event_stream(response):
                return self._json_body(exchange, "chat", streamed=self._stream)

            def chunk(data: bytes) -> None:
                if not data:
                    try:
                        parser.close()
                    except SSEError as e:
                        raise AgentError(PROTOCOL, f"coze stream: {e}") from None
                    exchange.finish(chat.answer())
                    return
                try:
                    parser.feed(data)
                except SSEError as e:
                    raise AgentError(PROTOCOL, f"coze stream: {e}") from None
                if chat.done:
                    exchange.finish(chat.answer())
            return chunk

        result = await self._exchange("POST", "/v3/chat", params, body, on_ok, retryable=True)
        if isinstance(result, AgentAnswer):
            return result
        return await self._poll(result["data"], on_task)

    async def _poll(self, chat: dict[str, Any], on_task: Callable[[str, str | None], None]) -> AgentAnswer:
        if not isinstance(chat, dict) or not chat.get("id"):
            raise AgentError(PROTOCOL, "coze chat answer names no chat id")
        chat_id, conversation_id = str(chat["id"]), chat.get("conversation_id") or None
        on_task(chat_id, conversation_id)
        ids = {"conversation_id": conversation_id or "", "chat_id": chat_id}
        deadline = self._clock.seconds() + self._poll_timeout
        while chat.get("status") in _RUNNING:
            if self._clock.seconds() >= deadline:
                self._cancel_quietly(chat_id, conversation_id)
                raise AgentError(TIMEOUT, f"coze chat still in progress after {self._poll_timeout:g} s")
            await deferLater(self._clock, POLL_INTERVAL, lambda: None)
            chat = (await self._call("POST", "/v3/chat/retrieve", ids, None, "chat retrieve"))["data"]
            if not isinstance(chat, dict):
                raise AgentError(PROTOCOL, "coze chat retrieve holds no chat")
        status = chat.get("status")
        if status != "completed":
            raise _chat_error(chat, str(status))
        listed = (await self._call("GET", "/v3/chat/message/list", ids, None, "message list"))["data"]
        if not isinstance(listed, list):
            raise AgentError(PROTOCOL, "coze message list holds no list")
        return merge_answers([m for m in listed if isinstance(m, dict)], conversation_id)

    async def _cancel(self, task_id: str, conversation_id: str | None) -> None:
        if not conversation_id:
            raise AgentError(PROTOCOL, "coze cancel needs the conversation id")
        await self._call("POST", "/v3/chat/cancel", None,
                         {"chat_id": task_id, "conversation_id": conversation_id}, "chat cancel")

    def _cancel_quietly(self, chat_id: str, conversation_id: str | None) -> None:
        self.cancel(chat_id, conversation_id, "").addErrback(
            lambda f: log.warn("coze cancel of chat {chat_id} failed: {why}", chat_id=chat_id,
                               why=f.getErrorMessage()))

    # -- HTTP

    async def _call(self, method: str, path: str, params: dict[str, str] | None,
                    json_body: Any, what: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._exchange(
            method, path, params, json_body, lambda ex, _: self._json_body(ex, what))
        return result

    def _json_body(self, exchange: Exchange, what: str,
                   streamed: bool = False) -> Callable[[bytes], None]:
        """The chunk callback for a JSON answer: bounded, then checked."""
        add, got = collector(MAX_BODY)

        def chunk(data: bytes) -> None:
            if data:
                add(data)
                return
            body = _load(got(), what)
            if not isinstance(body, dict):
                raise AgentError(PROTOCOL, f"coze {what} is not an object")
            if body.get("code", 0) != 0:
                raise AgentError(AGENT_ERROR, f"coze {what}: {str(body.get('msg') or '')[:200]}"
                                 f" (code {body.get('code')})")
            if streamed:  # a JSON answer to a streamed request that is no error
                raise AgentError(PROTOCOL, "coze answered a streamed chat with JSON")
            exchange.finish(body)
        return chunk

    async def _exchange(self, method: str, path: str, params: dict[str, str] | None,
                        json_body: Any,
                        on_ok: Callable[[Exchange, Any], Callable[[bytes], None]],
                        retryable: bool = False) -> Any:
        """One request through :class:`~libchat.runtimes.agents.http.Exchange`
        (no byte for ``timeout`` s: TIMEOUT). Only the create request may be
        retried: retrying a retrieve or a list would start a second chat."""
        url = self._base + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Authorization": f"Bearer {self._key}",
                   "Accept": "text/event-stream, application/json"}
        exchange = Exchange(self._treq, self._clock, self._timeout, self._pool)

        def on_head(code: int, response: Any) -> Callable[[bytes], None]:
            if 200 <= code < 300:
                return on_ok(exchange, response)
            add, got = collector(64 << 10)

            def error_body(data: bytes) -> None:
                if data:
                    add(data)
                    return
                detail = f"coze {path}: HTTP {code}"
                try:
                    error = json.loads(got())
                    if isinstance(error, dict) and error.get("msg"):
                        detail += f" {str(error['msg'])[:200]}"
                except ValueError:
                    pass
                raise AgentError(HTTP_ERROR, detail, status=code,
                                 retryable=code == 429 or code >= 500)
            return error_body

        try:
            return await exchange.run(method, url, headers, json_body, on_head)
        except AgentError as e:
            if e.retryable and not retryable:
                raise AgentError(e.reason, e.detail, False, e.status) from None
            raise


def _is_event_stream(response: Any) -> bool:
    types = response.headers.getRawHeaders(b"content-type") or [b""]
    return types[-1].split(b";")[0].strip().lower() == b"text/event-stream"
