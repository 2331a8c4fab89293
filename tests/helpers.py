"""Small builders shared by the tests (pytest tests and trial ``SynchronousTestCase``
classes, all run by pytest)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.task import Clock

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.storage.store import MemoryStore
from libchat.testing import FakeRuntime, FakeUpstream

from .launcher import BUNDLED, FIXTURES, ROOT

__all__ = ["BUNDLED", "FIXTURES", "ROOT", "World", "close", "each_case", "make_program",
           "tmp_dir", "user_message"]

C = TypeVar("C")


def tmp_dir(case: Any) -> Path:
    """A fresh, absolute directory for one trial-style test (``mktemp``; the
    conftest runs trial cases in pytest's ``tmp_path``, so it lands there)."""
    path = Path(case.mktemp()).resolve()
    path.mkdir()
    return path


def each_case(case: Any, cases: Iterable[C], check: Callable[[C], Any],
              name: Callable[[C], str] = repr) -> None:
    """Trial has no parametrize: run ``check`` on every case and fail once,
    naming each case that failed and why."""
    cases = list(cases)
    failures = []
    for c in cases:
        try:
            check(c)
        except AssertionError as e:
            failures.append(f"case {name(c)}: {type(e).__name__}: {e}")
        except Exception:  # noqa: BLE001 - reported as this case's failure
            failures.append(f"case {name(c)}: {traceback.format_exc()}")
    if failures:
        case.fail(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures))


def make_program(base: Path, name: str, **rules: Any) -> Path:
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.js").write_text("// test program\n")
    if rules:
        (d / "package.json").write_text(json.dumps({"name": name, "libchat": rules}))
    return d


def user_message(content: str = "hi", dialog_id: str = "d1", user_id: str = "u1",
                 message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"event_type": 1001, "dialog_id": dialog_id, "user_id": user_id,
             "message_id": message_id or f"m-{content}",
             "messages": {"content": content, "attachments": []}}
    event.update(extra)
    return event


def close(dialog_id: str = "d1", user_id: str = "u1") -> dict[str, Any]:
    return {"event_type": 1002, "dialog_id": dialog_id, "user_id": user_id}


class World:
    """A router over fakes and a clock."""

    def __init__(self, tmp: Path, **router_kw: Any) -> None:
        self.clock = Clock()
        self.programs = tmp / "programs"
        make_program(self.programs, "echo", keywords=["echo"])
        make_program(self.programs, "weather", keywords=["weather"], patterns=[r"\bforecast\b"])
        make_program(self.programs, "hello", patterns=[r"^\s*(hello|hi)\b"])
        self.library = ProgramLibrary([self.programs], now=self.clock.seconds)
        self.runtime = router_kw.pop("runtime", None) or FakeRuntime()
        self.store = MemoryStore()
        router_kw.setdefault("idle_timeout", 60)
        router_kw.setdefault("kill_grace", 4)
        self.router = Router(self.clock, self.library, self.runtime, self.store, **router_kw)
        self.router.start()
        self.up = FakeUpstream()
        self.router.attach(self.up)

    def send(self, event: dict[str, Any], up: FakeUpstream | None = None) -> Any:
        return self.router.receive(up or self.up, event)

    def last(self) -> Any:
        return self.runtime.started[-1]
