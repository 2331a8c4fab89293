"""The fakes provide the interfaces they stand in for."""

from __future__ import annotations

from pathlib import Path

from zope.interface.verify import verifyObject

from libchat.interfaces import IInstance, IRuntime, IStore, IUpstream
from libchat.front import FrontProtocol
from libchat.runner import NodeInstance, NodeRuntime
from libchat.store import JsonFileStore, MemoryStore
from libchat.testing import FakeRuntime, FakeUpstream

from .helpers import World


def test_fake_upstream() -> None:
    assert verifyObject(IUpstream, FakeUpstream())


def test_fake_runtime_and_instance(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert verifyObject(IRuntime, FakeRuntime())
    w.send({"event_type": 1001, "dialog_id": "d", "user_id": "u", "message_id": "m",
            "messages": {"content": "hello", "attachments": []}})
    assert verifyObject(IInstance, w.last())


def test_real_implementations_provide_the_same(tmp_path: Path) -> None:
    assert verifyObject(IStore, MemoryStore())
    assert verifyObject(IStore, JsonFileStore(tmp_path))
    assert IUpstream.implementedBy(FrontProtocol)
    assert IRuntime.implementedBy(NodeRuntime) and IInstance.implementedBy(NodeInstance)
