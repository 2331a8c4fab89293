"""The fakes provide the interfaces they stand in for."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from libchat.doors.frame import FrontProtocol
from libchat.interfaces import IInstance, IRuntime, IStore, IUpstream
from libchat.runtimes.node.runner import NodeInstance, NodeRuntime
from libchat.storage.store import JsonFileStore, MemoryStore
from libchat.testing import FakeRuntime, FakeUpstream

from .helpers import World, tmp_dir
from .logcheck import LogCheckMixin


class FakeTests(LogCheckMixin, SynchronousTestCase):
    def test_fake_upstream(self) -> None:
        assert verifyObject(IUpstream, FakeUpstream())

    def test_fake_runtime_and_instance(self) -> None:
        w = World(tmp_dir(self))
        assert verifyObject(IRuntime, FakeRuntime())
        w.send({"event_type": 1001, "dialog_id": "d", "user_id": "u", "message_id": "m",
                "messages": {"content": "hello", "attachments": []}})
        assert verifyObject(IInstance, w.last())

    def test_real_implementations_provide_the_same(self) -> None:
        assert verifyObject(IStore, MemoryStore())
        assert verifyObject(IStore, JsonFileStore(tmp_dir(self)))
        assert IUpstream.implementedBy(FrontProtocol)
        assert IRuntime.implementedBy(NodeRuntime) and IInstance.implementedBy(NodeInstance)
