"""A router over verified fakes and a clock, for the hardening unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from libchat.doors.frame import FrontFactory, FrontProtocol
from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.storage.store import MemoryStore
from libchat.testing import FakeRuntime

from ..helpers import make_program


class World:
    def __init__(self, tmp: Path, store: Any = None, **router_kw: Any) -> None:
        self.clock = Clock()
        make_program(tmp / "programs", "echo", keywords=["echo"])
        self.library = ProgramLibrary([tmp / "programs"], now=self.clock.seconds)
        self.runtime = FakeRuntime()  # records pauseEvents/resumeEvents in .flow
        self.store = store or MemoryStore()
        self.router = Router(self.clock, self.library, self.runtime, self.store, **router_kw)
        self.router.start()
        self.factory = FrontFactory(self.router, max_frame=1024, frame_timeout=30,
                                    clock=self.clock)

    def connect(self) -> tuple[FrontProtocol, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport


def user_message(content: str = "echo hi", dialog_id: str = "d1", user_id: str = "u1",
                 **extra: Any) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog_id, "user_id": user_id,
            "message_id": extra.pop("message_id", f"m-{content}"),
            "messages": {"content": content, "attachments": []}, **extra}


def frames(transport: StringTransport) -> list[dict[str, Any]]:
    from libchat.jsonc import loads
    from libchat.protocol.wire import FrameDecoder

    got, error = FrameDecoder(max_length=1 << 30).feed(transport.value())
    assert error is None
    return [loads(body) for _, body in got]
