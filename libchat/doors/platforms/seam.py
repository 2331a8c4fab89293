"""What the platform door remembers, as seams (CONTRACT §10, §14): callbacks
(:class:`ICallbackBook`) and the outbox (:class:`IOutbox`).

One node keeps it in its :class:`~libchat.doors.platforms.ledger.Ledger`
(synchronous, in memory, journaled behind); several nodes keep it in Redis
(:class:`libchat.cluster.dedupe.RedisCallbackBook`), because WeCom retries a
callback to whichever node the load balancer picks, and the node that sends
a dialog's replies is not always the one that took its callback.

Answers may be plain values or Deferreds: the door takes the synchronous path
(no extra reactor turn) when the answer is a plain value, so one node pays
nothing for the seam.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import Attribute, Interface

from .unified import ReplyTarget

Target = dict[str, Any]  # {"to": ..., "m": the Lark mention or None}


class ICallbackBook(Interface):
    """Callback ids taken (dedupe) and the reply target of each dialog."""

    def accept(app: str, key: str, dialog_id: str,
               reply_to: ReplyTarget | None) -> bool | defer.Deferred[bool]:
        """True: ``key`` is a repeat for ``app`` (``<platform>:<name>``), route
        nothing. False: it is new; it is remembered, and so is ``reply_to`` as
        the dialog's reply target. A Deferred failing with
        :class:`~libchat.interfaces.Unavailable` means "not known": the door
        answers 503 so the platform retries, and routes nothing."""

    def target(dialog_id: str) -> Target | None | defer.Deferred[Target | None]:
        """Where the dialog's replies go (None: no callback told us yet)."""

    def dedupe_hits(app: str) -> int:
        """Repeats this node answered for ``app`` (for ``/metrics``)."""


class IOutbox(Interface):
    """The replies this node has to send (items written ahead, each part's
    progress). One node: the :class:`~libchat.doors.platforms.ledger.Ledger`
    (a local journal). Several: :class:`libchat.cluster.outbox.RedisOutbox`
    (a hash per node in Redis, handed to a survivor when the node dies).

    An item is a dict: ``id``, ``app``, ``platform``, ``dialog``, ``kind``,
    ``n`` (parts accepted), and ``text`` or ``att``. The sender calls these
    synchronously and never waits for their writes."""

    items = Attribute("OrderedDict item id -> item: what this node holds to send, oldest first")

    def put(item: dict[str, Any]) -> defer.Deferred[None] | None:
        """Write ``item`` ahead (new, or replaced whole by a merge)."""

    def progress(item: dict[str, Any], parts_done: int) -> None:
        """Parts ``0 .. parts_done - 1`` of ``item`` were accepted by the platform."""

    def finish(item_id: str) -> None:
        """The item is done (sent, refused for good, or given up): forget it."""

    def holds(item: dict[str, Any]) -> bool:
        """False once the item is known to have been handed to another node
        (this node was taken for dead): the sender stops sending it."""


__all__ = ["ICallbackBook", "IOutbox", "Target"]
