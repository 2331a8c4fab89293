"""The dialog store of a cluster node: records and transcripts in Redis.

An :class:`~libchat.interfaces.IStore` for the local router of a node started
with ``--redis`` (CONTRACT §14). The router keeps working on in-memory
:class:`DialogRecord` objects, synchronously, as on one node; this store holds
only the dialogs the node *owns* (claimed under a fence token), and writes
every change to Redis through the fenced Lua ``append`` (``put_record`` is
the same script without an entry):

- each new transcript entry is one ``append`` (the record without its
  transcript rides with the last one of a batch), so ``seq`` is assigned by
  Redis, contiguous cluster-wide, and checked against the local one;
- changes of one reactor turn are written together (``callLater(0)``);
- :meth:`synced` is the acknowledgement point: it fires once every change made
  so far to the dialog is in Redis (fsynced there). The cluster router answers
  a front door, and releases a reply to an upstream, only then;
- a write that fails (Redis unreachable: outcome unknown; ``StaleFence``: no
  longer the owner) *breaks* the dialog: every waiter fails, and ``on_broken``
  tells the cluster router, which forgets the dialog (stops its instances).
  The next event claims it again and reloads what Redis has.

Tool memory is read from and written to Redis on every call (another node may
have saved it); a save is answered once Redis acknowledged it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.interfaces import IClusterStore, Then
from libchat.interfaces import IStore
from libchat.jsonc import dumps, loads
from libchat.storage.memory import MemoryStore
from libchat.storage.records import RECORD_FIELDS, DialogRecord

log = Logger()

PAGE = 1000  # transcript entries per XRANGE (txredisapi parses one element a turn)
_RECORD_ONLY = tuple(f for f in RECORD_FIELDS if f != "messages")


class SeqMismatch(Exception):
    """Redis numbered an entry differently from the owner: another writer got
    in (it cannot under a live fence), so the dialog is reloaded."""


class _Sync:
    """One owned dialog's write state."""

    __slots__ = ("fence", "pushed", "issued", "done", "waiters", "next", "broken")

    def __init__(self, fence: int, pushed: int) -> None:
        self.fence = fence
        self.pushed = pushed  # the last seq handed to Redis
        self.issued = 0  # writes sent
        self.done = 0  # writes answered (in order: one connection, FIFO)
        self.waiters: deque[tuple[int, defer.Deferred[None]]] = deque()
        self.next: list[defer.Deferred[None]] = []  # waiting for a held write (hold)
        self.broken: Failure | None = None


def record_bytes(record: DialogRecord) -> bytes:
    """The record without its transcript (field ``rec`` of the dialog hash)."""
    return dumps({f: getattr(record, f) for f in _RECORD_ONLY})


def record_from(rec: bytes, entries: list[bytes]) -> DialogRecord:
    data = loads(rec)
    data["messages"] = [loads(e) for e in entries]
    return DialogRecord.from_json(data)


@implementer(IStore)
class SharedDialogStore(MemoryStore):
    """The owned dialogs of this node, written through to Redis."""

    def __init__(self, cluster: IClusterStore, clock: IReactorTime,
                 incarnation: Callable[[], str]) -> None:
        super().__init__()
        self.cluster = cluster
        self.clock = clock
        self.incarnation = incarnation
        self.on_broken: Callable[[str], object] = lambda dialog_id: None
        self._sync: dict[str, _Sync] = {}
        self._flush_call: IDelayedCall | None = None
        self._turn: dict[str, DialogRecord] = {}  # changed in this reactor turn
        self._held: set[str] = set()  # dialogs whose write waits for a rider (hold)

    # -- ownership --------------------------------------------------------------

    def owns(self, dialog_id: str) -> bool:
        s = self._sync.get(dialog_id)
        return s is not None and s.broken is None

    def owned(self) -> list[str]:
        return list(self._sync)

    def own(self, dialog_id: str, fence: int, record: DialogRecord | None) -> None:
        """The node won the dialog under ``fence``; ``record`` is what Redis had."""
        self._sync[dialog_id] = _Sync(fence, record.seq if record is not None else 0)
        if record is not None:
            self._records[dialog_id] = record

    def disown(self, dialog_id: str) -> None:
        """Forget the dialog (released, adopted by another node, or broken)."""
        s = self._sync.pop(dialog_id, None)
        self._records.pop(dialog_id, None)
        self._turn.pop(dialog_id, None)
        if s is not None:
            failure = s.broken or Failure(KeyError(f"dialog {dialog_id} is no longer owned"))
            self._fail_waiters(s, failure)

    @defer.inlineCallbacks
    def fetch(self, dialog_id: str) -> Any:
        """Deferred[DialogRecord | None]: the dialog as Redis has it (any node)."""
        rec, seq = yield self.cluster.get_record(dialog_id)
        if rec is None:
            return None
        entries: list[bytes] = []
        after = 0
        while after < seq:
            page = yield self.cluster.read(dialog_id, after, PAGE)
            if not page:
                break
            entries.extend(e.data for e in page)
            after = page[-1].seq
        record = record_from(rec, entries)
        record.seq = max(record.seq, seq)
        return record

    # -- IStore -------------------------------------------------------------------

    def load(self) -> list[DialogRecord]:
        return []  # nothing is owned at start: dialogs are claimed on first touch

    def add(self, record: DialogRecord) -> None:
        if record.dialog_id not in self._sync:
            raise RuntimeError(f"dialog {record.dialog_id} created without a claim")
        super().add(record)

    def changed(self, record: DialogRecord) -> None:
        if self._records.get(record.dialog_id) is not record:
            return  # a forgotten dialog's late change (a stopping instance): not ours
        self._turn[record.dialog_id] = record
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush_turn)

    def memory_get(self, user_id: str, program: str, key: str) -> Any:
        d = self.cluster.memory_get(user_id, f"{program}/{key}")
        return d.addCallback(lambda v: None if v is None else loads(v))

    def memory_set(self, user_id: str, program: str, key: str, value: Any,
                   dialog_id: str, now: float = 0.0) -> "defer.Deferred[None]":
        d = self.cluster.memory_set(user_id, f"{program}/{key}", dumps(value))
        record = self._records.get(dialog_id)
        if record is not None:
            record.remember(program, key, value, now)
            self.changed(record)
        return d

    def flush(self) -> "defer.Deferred[Any]":
        self._flush_turn()
        return defer.DeferredList([self.synced(d) for d in list(self._sync)],
                                  consumeErrors=True)

    # -- writing ----------------------------------------------------------------------

    def synced(self, dialog_id: str, owned: bool = False) -> "defer.Deferred[None]":
        """Fires once every change made so far to the dialog is in Redis; fails
        if one was not (the dialog is then broken). Unowned: at once, or with
        ``owned`` (the caller just recorded something in it) a failure."""
        s = self._sync.get(dialog_id)
        if s is None:
            if owned:
                return defer.fail(KeyError(f"dialog {dialog_id} is no longer owned here"))
            return defer.succeed(None)
        if dialog_id in self._turn:
            if dialog_id in self._held:  # fired by the write unhold() lets go
                if s.broken is not None:
                    return defer.fail(s.broken)
                waiting: defer.Deferred[None] = defer.Deferred()
                s.next.append(waiting)
                return waiting
            self._write(dialog_id, self._turn.pop(dialog_id))
        return self._issued_answered(s)

    @staticmethod
    def _issued_answered(s: _Sync) -> "defer.Deferred[None]":
        """Fires once every write issued so far is answered; fails if one broke the dialog."""
        if s.broken is not None:
            return defer.fail(s.broken)
        if s.done >= s.issued:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        s.waiters.append((s.issued, d))
        return d

    def hold(self, dialog_id: str) -> None:
        """Until :meth:`unhold`, within the same call: the dialog's changes are
        not written by :meth:`synced` (its waiters wait for the write that
        comes next), so that a message known only after them (a forwarded
        event's receipt) can ride on their append (:meth:`synced_sending`)."""
        self._held.add(dialog_id)

    def unhold(self, dialog_id: str) -> None:
        """The caller writes next (:meth:`synced_sending`, else :meth:`synced`);
        the next reactor turn's flush does it otherwise."""
        self._held.discard(dialog_id)

    def synced_sending(self, dialog_id: str, node: str,
                       payload: bytes) -> "defer.Deferred[None] | None":
        """:meth:`synced`, and ``payload`` to ``node``'s inbox once it fires,
        in one step: the dialog's unwritten changes are written now with the
        message riding on their last append (Lua, atomic: the message exists
        only if the entry does). What a cross-node reply saves is a round trip
        and an fsync (bench/CLUSTER.md). None, having done nothing, when the
        message cannot ride: no new entry is waiting, or earlier writes of
        the dialog are still unanswered (a message waiting for those must
        leave first); the caller then gates and sends as usual."""
        s = self._sync.get(dialog_id)
        record = self._turn.get(dialog_id)
        if s is None or s.broken is not None or record is None or s.done < s.issued \
                or record.seq <= s.pushed:
            return None
        del self._turn[dialog_id]
        self._write(dialog_id, record, then=(node, payload))
        return self.synced(dialog_id, owned=True)  # a refused write has disowned it

    def _flush_turn(self) -> None:
        self._flush_call = None
        turn, self._turn = self._turn, {}
        for dialog_id, record in turn.items():
            self._write(dialog_id, record)

    def _write(self, dialog_id: str, record: DialogRecord,
               then: tuple[str, bytes] | None = None) -> None:
        s = self._sync.get(dialog_id)
        if s is None or s.broken is not None:
            return
        try:
            self._issue(dialog_id, s, record, then)
        finally:  # the waiters of a held write wait for this one
            while s.next:
                self._issued_answered(s).chainDeferred(s.next.pop(0))

    def _issue(self, dialog_id: str, s: _Sync, record: DialogRecord,
               then: tuple[str, bytes] | None) -> None:
        new = record.messages[-(record.seq - s.pushed):] if record.seq > s.pushed else []
        rec = record_bytes(record)
        inc = self.incarnation()
        for i, entry in enumerate(new):
            last = i == len(new) - 1
            seq = int(entry["seq"])
            d = self.cluster.append(dialog_id, inc, s.fence, dumps(entry), rec if last else b"",
                                    Then(then[0], then[1], seq) if last and then else None)
            self._track(dialog_id, s, d, seq)
        if not new:
            self._track(dialog_id, s, self.cluster.put_record(dialog_id, inc, s.fence, rec), None)
        s.pushed = record.seq

    def _track(self, dialog_id: str, s: _Sync, d: "defer.Deferred[Any]",
               seq: int | None) -> None:
        s.issued += 1

        def answered(result: Any) -> None:
            s.done += 1
            if isinstance(result, Failure):
                self._break(dialog_id, s, result)
            elif seq is not None and result != seq:
                self._break(dialog_id, s, Failure(SeqMismatch(
                    f"dialog {dialog_id}: Redis numbered entry {seq} as {result}")))
            while s.waiters and s.waiters[0][0] <= s.done and s.broken is None:
                s.waiters.popleft()[1].callback(None)
        d.addBoth(answered)

    def _break(self, dialog_id: str, s: _Sync, failure: Failure) -> None:
        if s.broken is not None:
            return
        s.broken = failure
        log.warn("cluster: a write of dialog {dialog_id} failed ({why}); it is reloaded "
                 "on its next event", dialog_id=dialog_id, why=failure.getErrorMessage())
        self._fail_waiters(s, failure)
        try:
            self.on_broken(dialog_id)
        except Exception:
            log.failure("cluster: forgetting a broken dialog failed")

    @staticmethod
    def _fail_waiters(s: _Sync, failure: Failure) -> None:
        while s.next:
            s.next.pop(0).errback(failure)
        while s.waiters:
            d = s.waiters.popleft()[1]
            d.errback(failure)
