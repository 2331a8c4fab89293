"""The seams between a libchat node and the shared Redis.

:class:`IClusterStore` is ownership and the shared transcript; :class:`IBus` is
how nodes poke each other (doorbells) and how web pushes fan out. Each has a
verified in-memory fake in :mod:`libchat.cluster.testing`, and one contract
test mixin (``tests/cluster/``) runs against the fake and a real redis-server.

Every method returns a Deferred. A Deferred that fails with
:class:`RedisUnavailable` means "not known to be done": the caller must not
acknowledge anything on it (CONTRACT §14: 503 / 2004, never a false success).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface


from libchat.interfaces import Unavailable


class RedisUnavailable(Unavailable):
    """Redis did not answer in time (or the connection is down). Whether the
    command took effect is unknown."""


class StaleFence(Exception):
    """The caller is not (or no longer) the dialog's owner under that fence
    token, or its node lease is gone: it must stop acting for the dialog."""


class LeaseTaken(Exception):
    """Another live process holds the node lease of this node id."""


@attrs.frozen
class Ownership:
    """The answer of a claim: who owns the dialog, under which fence token.

    ``node`` is the node id (whose inbox events are forwarded to); a claim won
    by the caller has ``node == caller`` and a token larger than any before."""

    node: str
    fence: int


@attrs.frozen
class Then:
    """A message to a node's inbox that rides with a transcript append
    (:meth:`IClusterStore.append`), sent only if the entry got ``seq``."""

    node: str
    payload: bytes
    seq: int


@attrs.frozen
class Entry:
    """One transcript entry of the shared stream: its seq and its bytes."""

    seq: int
    data: bytes


class IClusterStore(Interface):
    """Ownership of dialogs, node leases and the shared transcripts."""

    def acquire_lease(node_id: str, incarnation: str, ttl_ms: int) -> Deferred[None]:
        """Deferred[None]: take the node lease (``SET NX PX``) and register the
        node id; fails with :class:`LeaseTaken` if another incarnation holds it."""

    def refresh_lease(node_id: str, incarnation: str, ttl_ms: int) -> Deferred[bool]:
        """Deferred[bool]: extend the lease only if it still holds
        ``incarnation``; False means it expired (or was taken) meanwhile."""

    def drop_lease(node_id: str, incarnation: str) -> Deferred[bool]:
        """Deferred[bool]: delete the lease if still ours (SIGTERM)."""

    def lease_holder(node_id: str) -> Deferred[str | None]:
        """Deferred[str | None]: the incarnation holding the node's lease."""

    def claim(dialog_id: str, node_id: str, incarnation: str) -> Deferred[Ownership]:
        """Deferred[Ownership]: make the caller the owner if the dialog has no
        owner, or its owner's lease is gone (a new fence token), or it is
        already the caller's (the same token); otherwise the live owner.
        Concurrent claims are serialised: one winner per token. Fails with
        :class:`StaleFence` if the caller's own lease is gone."""

    def owner(dialog_id: str) -> Deferred[Ownership | None]:
        """Deferred[Ownership | None]: the recorded owner (live or not)."""

    def append(dialog_id: str, incarnation: str, fence: int, data: bytes,
               record: bytes = b"", then: Then | None = None) -> Deferred[int]:
        """Deferred[int]: record one transcript entry and return its seq (one
        more than the last, cluster-wide), and with ``record`` keep the dialog
        record in the same step; fails with :class:`StaleFence` if the caller
        is not the owner under ``fence`` or its lease is gone. With ``then``,
        the same atomic step appends ``then.payload`` to ``then.node``'s inbox
        (as :meth:`IBus.send`) if the entry got seq ``then.seq``: a message
        that must not leave before the entry is in Redis costs no second
        round trip (nor a second fsync)."""

    def put_record(dialog_id: str, incarnation: str, fence: int, record: bytes) -> Deferred[None]:
        """Deferred[None]: keep the dialog record (without its transcript);
        owner only, like :meth:`append`."""

    def get_record(dialog_id: str) -> Deferred[tuple[bytes | None, int]]:
        """Deferred[(record bytes or None, last seq)]."""

    def memory_get(user_id: str, slot: str) -> Deferred[bytes | None]:
        """Deferred[bytes | None]: the tool memory value kept for (user, slot)."""

    def memory_set(user_id: str, slot: str, value: bytes) -> Deferred[None]:
        """Deferred[None], fired once Redis acknowledged (fsynced) the save."""

    def keep(channel: str, data: bytes) -> Deferred[None]:
        """Deferred[None]: keep a reply for a channel no node can deliver to now."""

    def take_kept(channel: str, count: int) -> Deferred[list[bytes]]:
        """Deferred[list[bytes]]: take (remove) up to ``count`` kept replies, oldest first."""

    def forget_node(node_id: str) -> Deferred[None]:
        """Deferred[None]: drop a node id whose lease is gone and which owns
        nothing any more from the set the sweep walks."""

    def upstream_join(channel: str, node_id: str) -> Deferred[None]:
        """Deferred[None]: the node has a live upstream of ``channel`` (replies
        another node cannot deliver are sent to such a node)."""

    def upstream_leave(channel: str, node_id: str) -> Deferred[None]:
        """Deferred[None]: the node's last upstream of ``channel`` went away."""

    def upstream_nodes(channel: str) -> Deferred[set[str]]:
        """Deferred[set[str]]: the nodes that said they have one (live or not)."""

    def read(dialog_id: str, after: int = 0, limit: int = 1000) -> Deferred[list[Entry]]:
        """Deferred[list[Entry]]: entries with ``seq > after``, oldest first."""

    def last_seq(dialog_id: str) -> Deferred[int]:
        """Deferred[int]: the seq of the newest entry (0: none)."""

    def release(dialog_id: str, incarnation: str) -> Deferred[bool]:
        """Deferred[bool]: give up ownership if still ours (SIGTERM, or a
        dialog that ended); the fence token and the seq are kept."""

    def owned(node_id: str) -> Deferred[set[str]]:
        """Deferred[set[str]]: the dialogs recorded as owned by the node (what a
        survivor adopts when the node's lease is gone)."""

    def nodes() -> Deferred[set[str]]:
        """Deferred[set[str]]: every node id that ever took a lease."""


class IBus(Interface):
    """Doorbells between nodes, and pub/sub for web fan-out.

    A doorbell is a hint ("dialog X has work for you"), never the data: a lost
    one costs latency until the owner's periodic reconcile, not data."""

    def ring(node_id: str, dialog_id: str) -> Deferred[None]:
        """Deferred[None]: append a doorbell to the node's inbox stream."""

    def send(node_id: str, payload: bytes) -> Deferred[None]:
        """Deferred[None]: append a message to the node's inbox stream (after
        every earlier ``send``/``ring`` of this node, in order)."""

    def listen(node_id: str, callback: Callable[[str], object],
               on_message: Callable[[bytes], object] | None = None) -> Deferred[None]:
        """Deferred[None], fired once reading is positioned (every doorbell rung
        after it fires reaches ``callback(dialog_id)``): read the node's inbox
        stream with ``XREAD BLOCK`` on the blocking connection, resuming where
        it was after a reconnect; messages of :meth:`send` reach
        ``on_message(payload)``. Callback errors are logged, not fatal."""

    def on_reconcile(callback: Callable[[], object], every: float) -> None:
        """Call ``callback()`` every ``every`` seconds while listening (the
        node's sweep of its owned dialogs for work a lost doorbell hid)."""

    def publish(channel: str, payload: bytes) -> Deferred[int]:
        """Deferred[int]: publish to a channel (web fan-out); the number of
        subscribed connections that got it."""

    def subscribe(channel: str, callback: Callable[[bytes], object]) -> Deferred[None]:
        """Deferred[None], fired once subscribed: ``callback(payload)`` for each
        message; the subscription is renewed after a reconnect."""

    def unsubscribe(channel: str) -> Deferred[None]:
        """Deferred[None]: stop a subscription."""

    def stop() -> Deferred[None]:
        """Deferred[None]: stop listening and reconciling."""
