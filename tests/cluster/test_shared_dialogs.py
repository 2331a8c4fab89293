"""SharedDialogStore's hold (libchat/cluster/dialogs.py): while a dialog is
held, ``synced`` does not write its changes; its waiters fire with the write
that follows (which a receipt rides on), and fail if the dialog is lost
meanwhile. On the verified fakes (FakeClusterStore, one task.Clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from libchat.cluster.dialogs import SharedDialogStore
from libchat.cluster.lease import NodeLease
from libchat.cluster.testing import FakeClusterStore, FakeRedis
from libchat.storage.records import DialogRecord


def owned_store() -> tuple[SharedDialogStore, FakeRedis, DialogRecord]:
    world = FakeRedis(task.Clock())
    cluster = FakeClusterStore(world)
    lease = NodeLease(cluster, "a", world.clock, on_lost=lambda: None, on_healthy=lambda: None)
    lease.start()
    store = SharedDialogStore(cluster, world.clock, lambda: lease.incarnation)
    got: list[Any] = []
    cluster.claim("d1", "a", lease.incarnation).addCallback(got.append)
    store.own("d1", got[0].fence, None)
    record = DialogRecord("d1", "u1", 0.0, 0.0)
    store.add(record)
    return store, world, record


def fired(d: defer.Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def held_change(store: SharedDialogStore, record: DialogRecord) -> list[Any]:
    """Hold d1, record a user message in it; what its ``synced`` has fired."""
    store.hold("d1")
    record.append({"event_type": 1001, "messages": {"content": "hi"}}, 1.0)
    store.changed(record)
    return fired(store.synced("d1"))


def test_a_held_dialogs_waiters_fire_with_the_write_after_unhold_not_before() -> None:
    store, world, record = owned_store()
    waiting = held_change(store, record)
    assert waiting == [] and world.logs.get("d1") is None  # nothing written while held
    store.unhold("d1")
    assert waiting == [] and world.logs.get("d1") is None  # the caller writes next
    rode = store.synced_sending("d1", "b", b"receipt")
    assert rode is not None and fired(rode) == [None]
    assert waiting == [None] and len(world.logs["d1"]) == 1
    assert world.inboxes["b"] == [b"receipt"]


def test_a_held_write_nobody_sends_goes_out_with_the_next_turn() -> None:
    store, world, record = owned_store()
    waiting = held_change(store, record)
    store.unhold("d1")
    world.clock.advance(0)  # the turn's flush
    assert waiting == [None] and len(world.logs["d1"]) == 1


def test_a_held_dialog_lost_before_its_write_fails_its_waiters() -> None:
    store, world, record = owned_store()
    waiting = held_change(store, record)
    store.disown("d1")
    store.unhold("d1")
    assert len(waiting) == 1 and waiting[0].check(KeyError)
    world.clock.advance(0)
    assert world.logs.get("d1") is None
