"""A ``unix:`` memory API end to end: real twistd, the bundled ``hello``
program (the SDK reaches the API over ``LIBCHAT_API_SOCKET``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.hardening.procs import Twistd, message
from tests.launcher import BUNDLED


def test_sdk_programs_save_and_read_memory_over_a_unix_memory_api(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="lc-api-", dir="/tmp"))  # sun_path is short
    server = Twistd(tmp_path, BUNDLED, "--api", f"unix:{short / 'api.sock'}")
    try:
        server.start()
        conn = server.connect()
        try:
            conn.send(message("hello", "d1", "ada"))
            assert conn.recv()["messages"]["content"] == "Hello! What's your name?"
            conn.send(message("I'm Ada", "d1", "ada"))
            got = conn.recv_until(lambda e: e["event_type"] == 2002)
            assert got[0]["messages"]["content"] == "Nice to meet you, Ada! I'll remember you."
            assert got[-1]["reason"] == "completed"
            conn.send(message("hello", "d2", "ada"))  # a new dialog, a new instance
            assert conn.recv()["messages"]["content"] == "Hello again, Ada! Good to see you."
        finally:
            conn.close()
    finally:
        server.close()
        shutil.rmtree(short, ignore_errors=True)
