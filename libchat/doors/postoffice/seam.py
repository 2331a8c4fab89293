"""The hub as libchat's own code sees it (CONTRACT section 12).

The post-office hub (libchat.doors.postoffice) connects remote service
clients; the remote-program runtime (libchat.runtimes.postoffice) talks to
them through this face only, as an *internal address*: a clientID prefix
such as ``/libchat/dialog/`` that no socket may connect as.
"""
from __future__ import annotations
from typing import Any
from zope.interface import Interface


class IHubListener(Interface):
    """What the runtime hears from the hub."""

    def envelope(message: dict[str, Any], raw: str) -> None:
        """A connected client sent an envelope to an internal address this
        listener owns; ``message`` is the validated envelope, ``raw`` its text.
        The hub has already checked ``from`` is the sender's own clientID."""

    def client_connected(client_id: str) -> None:
        """A client connected (also when it replaced an older connection of
        the same clientID: then ``client_gone`` is NOT called)."""

    def client_gone(client_id: str) -> None:
        """A client's connection ended and no newer one replaced it."""


class IHub(Interface):
    """The hub, for libchat's own runtimes."""

    def clients() -> list[str]:
        """The clientIDs connected now."""

    def listen(prefix: str, listener: IHubListener) -> None:
        """Envelopes whose ``to`` starts with ``prefix`` go to ``listener``,
        never to a socket or the offline queue; no client may connect with a
        clientID starting with ``prefix`` (403). Connects and disconnects of
        every client are told to every listener."""

    def send(message: dict[str, Any]) -> bool:
        """Deliver an envelope from an internal address to a connected client
        (``message["to"]`` a single clientID); the hub encodes it once.
        Returns False, sending nothing and queueing nothing, when the target
        is not connected."""


class IOfflineQueue(Interface):
    """Envelopes waiting for absent clientIDs (CONTRACT section 12): in order,
    bounded per target, expiring. One node: :class:`~.hub.OfflineQueue` (a
    fsynced file, plain answers); several: ``libchat.cluster.offline.
    RedisOfflineQueue`` (every answer a Deferred). The hub takes the
    synchronous path whenever an answer is not a Deferred."""

    def __len__() -> int:
        """How many wait (for /metrics; with Redis, as of the last call)."""

    def earliest() -> float | None:
        """When the hub should next call :meth:`expire` (None: nothing waits)."""

    def offer(target: str, sender: str, subject: Any, raw: str, expires: float) -> Any:
        """Queue one envelope unless the target's queue is full: True/False,
        or a Deferred of it; a Deferred failing with
        :class:`~libchat.interfaces.Unavailable` means not known to be queued
        (the hub tells the sender UNDELIVERABLE)."""

    def take(target: str) -> Any:
        """The target's waiting items, oldest first (dicts with ``raw``,
        ``from``, ``subject``, ``target``, ``expires``), or a Deferred of them."""

    def delivered(target: str, items: list[dict[str, Any]]) -> Any:
        """``items`` from :meth:`take` reached the target: forget them. (A
        queue whose ``take`` already forgot them does nothing.)"""

    def expire(now: float) -> Any:
        """Remove and return the items past their expiry (or a Deferred of them)."""


class IHubPeers(Interface):
    """The other nodes' hubs (``--redis``; ``libchat.cluster.postoffice``).
    The hub calls it only for what is not on this node; without ``--redis``
    a hub has none and routes as on one node."""

    def clients() -> list[str]:
        """The clientIDs connected to other live nodes."""

    def attached(client_id: str) -> None:
        """A client connected here: tell the registry and the other nodes."""

    def detached(client_id: str) -> None:
        """A client's connection here ended (not replaced here)."""

    def where(client_id: str) -> str | None:
        """The live other node holding ``client_id`` as far as this node
        knows (its mirror), or None; sends nothing."""

    def forward(sender: str, target: str, raw: str, kind: str, subject: Any) -> bool:
        """Send a client's envelope to the live node holding ``target``;
        False when no other node holds it (the hub queues it)."""

    def queued(target: str) -> Any:
        """An envelope for ``target`` was queued: if it is connected to a
        live node after all (it connected meanwhile), that node takes its
        queue. None, or a Deferred firing once that node was told (never
        failing): until then the hub lets its later envelopes to ``target``
        only be queued after this one, so none passes it."""

    def send(message: dict[str, Any], raw: str) -> bool:
        """:meth:`IHub.send` to a client on another live node; False if none."""

    def sent_from(address: str) -> None:
        """This node sent from an internal address (its replies come here)."""

    def internal(message: dict[str, Any], raw: str, target: str) -> bool:
        """An envelope to an internal address: True if it went to the node
        that sent from that address (not this one); False: this node's
        listener takes it (the peers may also have passed it on)."""

    def bounce(sender: str, frame: str) -> None:
        """An error frame for a sender connected to another node."""
