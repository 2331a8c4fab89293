"""What the fakes share: scripted faults, the request record, multipart, JSON."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest


@attrs.define
class Fault:
    """One scripted answer for one request to an endpoint.

    ``delay`` seconds pass first (by the fake's clock). Then: with ``code``,
    the platform's error body (``errcode``/``errmsg`` or ``code``/``msg``)
    with HTTP ``status`` (the fake's default when None); with only
    ``status``, a bare HTTP error (5xx, 429) whose body is not JSON; with
    neither, the request is handled normally (slowness alone).
    """

    status: int | None = None
    code: int | None = None
    msg: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@attrs.frozen
class Recorded:
    """One request as the fake received it."""

    endpoint: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float
    json: Any = None
    form: dict[str, FormPart] = attrs.field(factory=dict)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The parts of a ``multipart/form-data`` body, by field name."""
    if not content_type.lower().startswith("multipart/form-data"):
        return {}
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n"
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        return {}
    parts = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        parts[name] = FormPart(name, part.get_filename(), part.get_content_type()
                               if part.get("content-type") else None,
                               data if isinstance(data, bytes) else b"")
    return parts


class Script:
    """Faults queued per endpoint, and every request recorded."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.faults: dict[str, deque[Fault]] = {}
        self.requests: list[Recorded] = []

    def fail(self, endpoint: str, fault: Fault | None = None, times: int = 1, **kw: Any) -> None:
        """Queue ``fault`` (or ``Fault(**kw)``) for the next ``times`` requests."""
        f = fault if fault is not None else Fault(**kw)
        self.faults.setdefault(endpoint, deque()).extend(attrs.evolve(f) for _ in range(times))

    def slow(self, endpoint: str, seconds: float, times: int = 1) -> None:
        self.fail(endpoint, Fault(delay=seconds), times)

    def take(self, endpoint: str) -> Fault | None:
        queue = self.faults.get(endpoint)
        return queue.popleft() if queue else None

    def to(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def record(self, endpoint: str, request: IRequest) -> Recorded:
        content = request.content
        content.seek(0)
        body = content.read()
        content.seek(0)
        uri = request.uri.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        parsed: Any = None
        if body and "json" in headers.get("content-type", "application/json"):
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                parsed = None
        rec = Recorded(endpoint, request.method.decode("latin-1"), urlsplit(uri).path,
                       parse_qs(urlsplit(uri).query, keep_blank_values=True), headers, body,
                       self.clock.seconds(), parsed,
                       parse_multipart(headers.get("content-type", ""), body))
        self.requests.append(rec)
        return rec


def json_answer(request: IRequest, status: int, body: Any,
                headers: dict[str, str] | None = None) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    for k, v in (headers or {}).items():
        request.setHeader(k.encode(), v.encode())
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def bare_error(request: IRequest, status: int, headers: dict[str, str] | None = None) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/html")
    for k, v in (headers or {}).items():
        request.setHeader(k.encode(), v.encode())
    return f"<html><body><h1>{status}</h1></body></html>".encode()


def after(clock: IReactorTime, fault: Fault | None,
          then: Callable[[], bytes]) -> bytes | defer.Deferred[bytes]:
    """Run ``then`` now, or after the fault's delay on ``clock``."""
    if fault is None or fault.delay <= 0:
        return then()
    return task.deferLater(clock, fault.delay, then)


def encode_multipart(fields: dict[str, str | tuple[str, str, bytes]],
                     boundary: str = "----libchat-fake-boundary-7d3a") -> tuple[str, bytes]:
    """A ``multipart/form-data`` body (StubTreq cannot send ``files=``): a str
    value is a plain field, a tuple ``(filename, content_type, data)`` a file."""
    out = []
    for name, value in fields.items():
        if isinstance(value, str):
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                       + value.encode("utf-8") + b"\r\n")
        else:
            filename, ctype, data = value
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                       f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode("utf-8")
                       + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(out)


def add_remote_routes(app: Any) -> None:
    """The ``/_fake/`` scripting routes of a fake class's Klein ``app`` (for a
    fake in another process); the class has ``script`` and ``expire_tokens``."""

    @app.route("/_fake/fault", methods=["POST"])
    def remote_fault(self: Any, request: IRequest) -> bytes:
        spec = json.loads(request.content.read())
        times = int(spec.pop("times", 1))
        endpoint = spec.pop("endpoint")
        self.script.fail(endpoint, Fault(**spec), times)
        return json_answer(request, 200, {"ok": True})

    @app.route("/_fake/expire_tokens", methods=["POST"])
    def remote_expire(self: Any, request: IRequest) -> bytes:
        self.expire_tokens()
        return json_answer(request, 200, {"ok": True})

    @app.route("/_fake/requests", methods=["GET"])
    def remote_requests(self: Any, request: IRequest) -> bytes:
        return json_answer(request, 200, [
            {"endpoint": r.endpoint, "method": r.method, "path": r.path, "query": r.query,
             "json": r.json, "at": r.at} for r in self.script.requests])
