"""An incremental Server-Sent Events parser (the WHATWG "event stream
interpretation", push style): bytes go in as they arrive, whole events come out.

Why our own: the maintained parsers checked do not fit a Twisted body
protocol that is pushed chunks. ``sseclient-py`` and ``sseclient`` iterate a
blocking ``requests`` stream; ``aiohttp-sse-client`` and ``httpx-sse`` are
bound to their asyncio HTTP clients; ``twisted.web`` has none. The format is
small, so this module is small and tested byte by byte and with chunks split
anywhere (tests/agents/test_sse.py).

Rules kept: LF, CRLF and lone CR end lines (a CR at the end of a chunk waits
for the next one to know whether an LF follows); a line starting with ``:``
is a comment; ``data:`` lines of one event are joined with LF; ``event:``
names it (default ``message``); a blank line dispatches (an event with no
``data`` is dropped, as browsers do); one space after the colon is removed;
``id:`` and ``retry:`` are read and ignored (no reconnection here). Memory is
bounded: a line longer than ``max_line`` bytes raises :class:`SSEError`, and
so do an event whose data exceeds it.
"""

from __future__ import annotations

from typing import Callable

MAX_LINE = 1 << 20


class SSEError(Exception):
    """The stream broke a bound (or was fed after close)."""


class SSEParser:
    """``SSEParser(on_event).feed(chunk)``; ``on_event(event, data)`` per event."""

    def __init__(self, on_event: Callable[[str, str], None], max_line: int = MAX_LINE) -> None:
        self.on_event = on_event
        self.max_line = max_line
        self._line = bytearray()
        self._cr = False         # the last byte seen was a CR (an LF may follow)
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._closed = False
        self._first = True       # a leading BOM is stripped once

    def feed(self, chunk: bytes) -> None:
        if self._closed:
            raise SSEError("fed after close")
        if self._first and chunk:
            if len(self._line) + len(chunk) < 3 and b"\xef\xbb\xbf".startswith(
                    bytes(self._line) + chunk):
                self._line += chunk  # may still be a BOM
                return
            chunk = bytes(self._line) + chunk
            self._line.clear()
            self._first = False
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        start = 0
        n = len(chunk)
        if self._cr and n and chunk[0] == 0x0A:
            start = 1  # the LF of a CRLF split across chunks
        self._cr = False
        while start < n:
            lf = chunk.find(b"\n", start)
            cr = chunk.find(b"\r", start)
            if lf < 0 and cr < 0:
                self._grow(chunk[start:])
                return
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            self._grow(chunk[start:end])
            line = bytes(self._line)
            self._line.clear()
            self._line_done(line)
            if chunk[end] == 0x0D:
                if end + 1 == n:
                    self._cr = True
                    return
                start = end + 2 if chunk[end + 1] == 0x0A else end + 1
            else:
                start = end + 1

    def close(self) -> None:
        """The stream ended: a line or event left unfinished is dropped (the
        standard's rule); further feeds raise."""
        self._closed = True
        self._line.clear()
        self._data = []

    def _grow(self, part: bytes) -> None:
        if len(self._line) + len(part) > self.max_line:
            self._line.clear()
            raise SSEError(f"an SSE line over {self.max_line} bytes")
        self._line += part

    def _line_done(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        if not line:
            if self._data:
                event, data = self._event or "message", "\n".join(self._data)
                self._event, self._data, self._size = "", [], 0
                self.on_event(event, data)
            else:
                self._event = ""
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value) + 1
            if self._size > self.max_line:
                self._data, self._size = [], 0
                raise SSEError(f"an SSE event's data over {self.max_line} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        # "id", "retry" and unknown fields: ignored
