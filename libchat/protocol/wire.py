"""The frame format of docs/protocol.md §1, shared by the front and program sockets.

``[16-byte header][body]``: magic u32, version u16, type u16, length u32,
reserved u32, all big-endian. :class:`FrameDecoder` is a pure parser (no I/O)
so it can be tested byte by byte and fuzzed; :class:`FrameProtocol` puts it on
a Twisted transport.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from libchat.protocol import codes
from libchat.jsonc import dumps

MAGIC = 0x4C434854  # "LCHT"
VERSION = 1
HEADER = struct.Struct(">IHHII")
HEADER_SIZE = HEADER.size  # 16
DEFAULT_MAX_FRAME = 4 * 1024 * 1024


class FrameError(Exception):
    """The stream can no longer be trusted; the connection must be closed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_frame(event_type: int, body: bytes, magic: int = MAGIC) -> bytes:
    """One frame around an already-encoded JSON body."""
    return HEADER.pack(magic, VERSION, event_type, len(body), 0) + body


def encode_event(event: dict[str, Any], magic: int = MAGIC) -> bytes:
    """One frame for an event dict; the header type is its ``event_type``."""
    return encode_frame(int(event["event_type"]), dumps(event), magic)


class FrameDecoder:
    """Incremental parser: ``feed(data)`` returns the frames completed so far.

    The header is checked (magic, version, length against the maximum) before
    any body byte is buffered, so an oversized frame costs 16 bytes of memory.
    Complete frames are sliced straight out of the incoming chunk; only a
    trailing partial frame is kept, in one ``bytearray`` consumed by offset, so
    a 1 MiB body in 4 KiB chunks costs linear, not quadratic, copying.
    """

    def __init__(self, magic: int = MAGIC, max_length: int = DEFAULT_MAX_FRAME) -> None:
        self.magic = magic
        self.max_length = max_length
        self._buf = bytearray()
        self._need = HEADER_SIZE  # bytes the buffer must hold to make progress
        self.broken: FrameError | None = None

    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (for stall detection)."""
        return len(self._buf)

    def _header(self, data: bytes | bytearray | memoryview, off: int) -> tuple[int, int]:
        magic, version, ftype, length, _reserved = HEADER.unpack_from(data, off)
        if magic != self.magic:
            raise FrameError(codes.BAD_FRAME, f"bad magic 0x{magic:08x}")
        if version != VERSION:
            raise FrameError(codes.BAD_FRAME, f"unknown version {version}")
        if length > self.max_length:
            raise FrameError(
                codes.MSG_TOO_LARGE,
                f"frame of {length} bytes exceeds the maximum of {self.max_length}",
            )
        return ftype, length

    def feed(self, data: bytes) -> tuple[list[tuple[int, bytes]], FrameError | None]:
        """Parse ``data``; return ``(frames, error)``.

        Frames before a broken header are still returned; after an error the
        decoder refuses further input (the caller closes the connection).
        """
        if self.broken is not None:
            return [], self.broken
        frames: list[tuple[int, bytes]] = []
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return frames, None
            src: bytes | bytearray = self._buf
        else:
            src = data
        off = 0
        end = len(src)
        try:
            while end - off >= HEADER_SIZE:
                ftype, length = self._header(src, off)
                stop = off + HEADER_SIZE + length
                if stop > end:
                    self._need = HEADER_SIZE + length
                    break
                frames.append((ftype, bytes(src[off + HEADER_SIZE : stop])))
                off = stop
            else:
                self._need = HEADER_SIZE
        except FrameError as e:
            self.broken = e
            self._buf = bytearray()
            return frames, e
        if src is self._buf:
            del self._buf[:off]
        else:
            self._buf = bytearray(data[off:])
        return frames, None


class FrameProtocol(Protocol):
    """A connection speaking frames; subclasses implement :meth:`frameReceived`.

    A broken stream (bad magic/version, oversized frame) gets one 2004 with the
    matching code and the connection is closed: nothing else is affected.
    """

    log = Logger()
    magic: int = MAGIC
    max_frame: int = DEFAULT_MAX_FRAME

    def connectionMade(self) -> None:
        self.decoder = FrameDecoder(self.magic, self.max_frame)

    def dataReceived(self, data: bytes) -> None:
        frames, error = self.decoder.feed(data)
        for ftype, body in frames:
            if self.transport is None or getattr(self.transport, "disconnecting", False):
                return
            self.frameReceived(ftype, body)
        if error is not None:
            self.frameError(error)

    def frameReceived(self, event_type: int, body: bytes) -> None:
        raise NotImplementedError

    def frameError(self, error: FrameError) -> None:
        self.log.warn(
            "closing {peer}: {code} {message}",
            peer=self.transport.getPeer() if self.transport else None,
            code=error.code,
            message=error.message,
        )
        if self.transport is None:  # already disconnected: nobody to tell
            return
        self.sendEvent(codes.error(error.code, error.message))
        self.transport.loseConnection()

    def sendEvent(self, event: dict[str, Any]) -> None:
        assert self.transport is not None, "sendEvent before connectionMade"
        self.transport.write(encode_event(event, self.magic))
