"""A router with the operators runtime over fakes and a task.Clock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from zope.interface import implementer

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.interfaces import IOperatorSink
from libchat.runtimes.operators.book import IOperatorBook, JournalBook
from libchat.runtimes.operators.runtime import OperatorRuntime
from libchat.runtimes.switch import RuntimeSwitch
from libchat.storage.store import MemoryStore, run_inline
from libchat.testing import FakeRuntime, FakeUpstream

from ..helpers import BUNDLED, make_program


@implementer(IOperatorSink)
class Sink:
    """One operator socket: keeps what the desk sent it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, event_type: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]

    def types(self) -> list[int]:
        return [e["event_type"] for e in self.events]


def programs(tmp: Path, **human: Any) -> Path:
    """The bundled ``human`` program (settings overridden by ``human``), and echo."""
    base = tmp / "programs"
    make_program(base, "echo", keywords=["echo"])
    shutil.copytree(BUNDLED / "human", base / "human")
    if human:
        manifest = base / "human" / "package.json"
        data = json.loads(manifest.read_text("utf-8"))
        data["libchat"].update(human)
        manifest.write_text(json.dumps(data), "utf-8")
    return base


class Desk:
    """Router + switch (a fake node runtime, the real operators runtime)."""

    def __init__(self, tmp: Path, *, clock: Clock | None = None,
                 store: MemoryStore | None = None, book: IOperatorBook | None = None,
                 idle_timeout: float = 3600, **human: Any) -> None:
        self.tmp = tmp
        self.clock = clock or Clock()
        if not (tmp / "programs").exists():
            programs(tmp, **human)
        self.library = ProgramLibrary([tmp / "programs"])
        self.store = store or MemoryStore()
        self.book = book if book is not None else JournalBook(tmp / "operators", run_inline)
        self.desk = OperatorRuntime(self.clock, self.book)
        self.node = FakeRuntime()
        self.router = Router(self.clock, self.library,
                             RuntimeSwitch(self.library, {"node": self.node,
                                                          "operators": self.desk}),
                             self.store, idle_timeout=idle_timeout)
        self.desk.attach(self.router)
        self.router.start()
        self.up = FakeUpstream()
        self.router.attach(self.up)

    def say(self, text: str, dialog_id: str = "d1", user_id: str = "u1",
            message_id: str | None = None) -> Any:
        return self.router.receive(self.up, {
            "event_type": 1001, "dialog_id": dialog_id, "user_id": user_id,
            "message_id": message_id or f"m-{dialog_id}-{text}",
            "messages": {"content": text, "attachments": []}})

    def leave(self, dialog_id: str = "d1", user_id: str = "u1") -> Any:
        return self.router.receive(self.up, {"event_type": 1002, "dialog_id": dialog_id,
                                             "user_id": user_id})

    def connect(self, operator_id: str) -> Sink:
        sink = Sink()
        self.desk.operator_connected(operator_id, sink)
        return sink

    def reply(self, operator_id: str, dialog_id: str, text: str) -> Any:
        return self.desk.operator_event(operator_id, {
            "event_type": 3102, "dialog_id": dialog_id, "messages": {"content": text}})

    def done(self, operator_id: str, dialog_id: str) -> Any:
        return self.desk.operator_event(operator_id, {"event_type": 3103,
                                                      "dialog_id": dialog_id})

    def to_user(self, dialog_id: str = "d1") -> list[dict[str, Any]]:
        return [e for e in self.up.events if e.get("dialog_id") == dialog_id]
