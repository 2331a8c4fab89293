"""HTTP sites whose request bodies are bounded while they arrive.

Twisted's own :class:`~twisted.web.server.Request` reads a whole body (to a
temporary file past 100 kB) before any resource sees it, so a client could
make the server read gigabytes only to be told 413. A :func:`bounded_site`
refuses a request whose ``Content-Length`` is over the limit as soon as its
headers are complete, without reading a byte of the body, and cuts a chunked
body off the moment it passes the limit. Either way the answer is a JSON
``413 {"code": "MSG_TOO_LARGE", ...}`` and the connection is closed (the
rest of the body is never read).

Access log lines leave the query string out: a ``?token=`` (web, post
office) or ``?secret=`` (the post office's ``/token``) must never reach a log.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from libchat.jsonc import dumps
from libchat.protocol import codes


class BoundedRequest(Request):
    """A request that answers 413 and closes once its body passes ``max_body``."""

    max_body = 1024 * 1024
    too_large = False  # read by libchat.doors.memory_api.json_body

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            # the channel would send "100 Continue" after this: not any more
            self.requestHeaders.removeHeader(b"Expect")
            self._refuse()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        content: Any = self.content
        if content.tell() + len(data) > self.max_body:
            self._refuse()
            content.seek(0)
            content.truncate()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.too_large:  # answered already; the connection is closing
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        """Write the 413 straight to the connection (the request line may not
        even be parsed into this request yet) and close it."""
        self.too_large = True
        body = dumps({"code": codes.MSG_TOO_LARGE,
                      "message": f"body over {self.max_body} bytes"})
        head = (b"HTTP/1.1 413 Request Entity Too Large\r\n"
                b"Content-Type: application/json\r\n"
                b"Cache-Control: no-store\r\n"
                b"Connection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        transport: Any = self.channel.transport
        transport.write(head + body)
        self.channel.loseConnection()


class _WithoutQuery:
    """A request as the access log sees it: its URI without the query."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = request.uri.split(b"?", 1)[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_line(timestamp: str, request: Any) -> str:
    """Twisted's combined log line, with the query string left out."""
    return str(combinedLogFormatter(timestamp, _WithoutQuery(request)))


def bounded_site(resource: IResource, max_body: int) -> Site:
    """A :class:`Site` serving ``resource`` with bodies of at most ``max_body``
    bytes, logging no query strings."""
    request: type[Request] = type("BoundedRequest", (BoundedRequest,), {"max_body": max_body})
    site = Site(resource, logFormatter=access_line)
    site.requestFactory = request
    return site
