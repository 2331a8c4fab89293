"""An incremental ``text/event-stream`` parser (the WHATWG event-stream
rules): bytes in any chunking, events out as ``on_event(event, data)``.

(Stand-in written on the ``coze`` branch so the Coze client can be tested
before the ``agents`` branch merges; that branch's module with the same API
replaces it.)

Lines end in CRLF, LF or CR (a CR at the end of one chunk and the LF at the
start of the next are one line end); ``:`` starts a comment; a blank line
dispatches the event (type ``message`` unless an ``event:`` field named one)
when it holds data; ``data:`` lines are joined with ``\\n``. A line longer
than ``max_line`` bytes raises :class:`SSEError` before it is buffered whole,
so a hostile stream cannot grow memory."""

from __future__ import annotations

from typing import Callable


class SSEError(Exception):
    """The stream is not one this parser accepts (a line over ``max_line``)."""


class SSEParser:
    def __init__(self, on_event: Callable[[str, str], None], max_line: int = 1 << 20) -> None:
        self._on_event = on_event
        self._max_line = max_line
        self._partial = bytearray()
        self._skip_lf = False          # the last chunk ended in CR
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> None:
        start, end = 0, len(data)
        if self._skip_lf and end:
            self._skip_lf = False
            if data[0:1] == b"\n":
                start = 1
        while start < end:
            cr, lf = data.find(b"\r", start), data.find(b"\n", start)
            stop = min(i for i in (cr, lf, end) if i >= 0)
            if len(self._partial) + stop - start > self._max_line:
                raise SSEError(f"event-stream line over {self._max_line} bytes")
            if stop == end:
                self._partial += data[start:end]
                return
            self._partial += data[start:stop]
            line, self._partial = bytes(self._partial), bytearray()
            start = stop + 1
            if data[stop:stop + 1] == b"\r":
                if start == end:
                    self._skip_lf = True
                elif data[start:start + 1] == b"\n":
                    start += 1
            self._line(line.decode("utf-8", "replace"))

    def close(self) -> None:
        """The stream ended: an event without its blank line is discarded
        (as the event-stream rules say)."""
        self._partial, self._event, self._data = bytearray(), "", []

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                event, data = self._event or "message", "\n".join(self._data)
                self._event, self._data = "", []
                self._on_event(event, data)
            else:
                self._event = ""
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
