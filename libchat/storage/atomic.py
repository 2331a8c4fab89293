"""Small file primitives shared by the store and the journal: whole writes,
atomic replacement, and directory fsync (a rename or a new file is durable
only once its directory is)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

Buffer = Union[bytes, bytearray]
# at most this many buffers per writev (Linux's IOV_MAX is 1024)
IOV_MAX = 1024


def write_fully(fd: int, data: Buffer | Sequence[Buffer]) -> None:
    """Write every byte of ``data``: one buffer, or several written in order
    with ``writev`` (a big file need not be joined into one bytes first)."""
    if isinstance(data, (bytes, bytearray)):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return
    # every view is released at the end, even after an error: a kept bytearray
    # (the snapshot's transcript) cannot grow while a view of it is alive
    views = [memoryview(p) for p in data if len(p)]
    parts = list(views)
    try:
        while parts:
            done = os.writev(fd, parts[:IOV_MAX])
            while parts and done >= len(parts[0]):
                done -= len(parts[0])
                parts.pop(0)
            if done:
                parts[0] = parts[0][done:]
                views.append(parts[0])
    finally:
        for view in reversed(views):
            view.release()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, data: Buffer | Sequence[Buffer]) -> None:
    """Replace ``directory/name`` with ``data`` so a crash never tears it."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_fully(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
