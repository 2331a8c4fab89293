"""The names of every Redis key libchat uses (one place, so docs/scaleout.md
and the scripts cannot disagree with the code).

Ids are used as they are inside key names: dialog and node ids never contain
whitespace (CONTRACT §1/§14), and Redis keys are binary-safe anyway.
"""

from __future__ import annotations

import attrs

DEFAULT_PREFIX = "lc:"
INBOX_MAXLEN = 10000  # messages kept per inbox (approximate trim); only the unread matter


@attrs.frozen
class Keys:
    prefix: str = DEFAULT_PREFIX

    def lease(self, node_id: str) -> str:
        """String: the node lease, holding the node process's incarnation (PX 10 s)."""
        return f"{self.prefix}node:{node_id}"

    @property
    def nodes(self) -> str:
        """Set: every node id that took a lease (what the survivors' sweep walks)."""
        return f"{self.prefix}nodes"

    def owned(self, node_id: str) -> str:
        """Set: the dialog ids the node owns."""
        return f"{self.prefix}owned:{node_id}"

    def dialog(self, dialog_id: str) -> str:
        """Hash: node, inc (the owner's incarnation), fence, seq, rec (the
        dialog record without its transcript, JSON)."""
        return f"{self.prefix}dlg:{dialog_id}"

    def log(self, dialog_id: str) -> str:
        """Stream: the transcript; entry id ``<seq>-0``, field ``e`` the entry."""
        return f"{self.prefix}log:{dialog_id}"

    def inbox(self, node_id: str) -> str:
        """Stream: the node's inbox: field ``d`` a doorbell's dialog id, or
        field ``m`` a message from another node (a forwarded event, a reply,
        a receipt)."""
        return f"{self.prefix}inbox:{node_id}"

    def memory(self, user_id: str) -> str:
        """Hash: the user's tool memory; field ``<program>/<key>``, value JSON."""
        return f"{self.prefix}mem:{user_id}"

    def kept(self, channel: str) -> str:
        """List: replies kept for a channel with no live upstream on any node."""
        return f"{self.prefix}kept:{channel}"

    def upstreams(self, channel: str) -> str:
        """Set: node ids with a live upstream of the channel (``frame``...)."""
        return f"{self.prefix}up:{channel}"

    def channel(self, name: str) -> str:
        """Pub/sub channel (web fan-out)."""
        return f"{self.prefix}ch:{name}"

    # -- the stores of the other doors (docs/scaleout.md "Stores of the other doors")

    def callback(self, app: str, key: str) -> str:
        """String, ``PX`` 8 h: a platform callback id seen by app ``<platform>:<name>``
        (CONTRACT §10 dedupe); ``p`` while its first taker has not confirmed it,
        ``r`` once it has."""
        return f"{self.prefix}cb:{app}:{key}"

    @property
    def reply_targets(self) -> str:
        """Hash: a platform dialog's reply target (field dialog id, value JSON
        ``{"to", "m"}``), read by whichever node sends the dialog's replies."""
        return f"{self.prefix}ptarget"

    def platform_outbox(self, node_id: str) -> str:
        """Hash: the platform replies a node has to send (§10 outbox): field
        ``<item id>`` the item as JSON, field ``<item id>:n`` the parts sent."""
        return f"{self.prefix}pout:{node_id}"

    def postoffice_queue(self, target: str) -> str:
        """List: post-office envelopes waiting for an absent clientID (§12),
        oldest first; each a JSON item with ``expires``."""
        return f"{self.prefix}po:q:{target}"

    @property
    def postoffice_due(self) -> str:
        """Sorted set: clientIDs with waiting envelopes, scored by the expiry of
        the oldest (what the expiry sweep walks)."""
        return f"{self.prefix}po:due"

    @property
    def postoffice_count(self) -> str:
        """String: how many envelopes wait in all the post-office queues."""
        return f"{self.prefix}po:n"

    @property
    def postoffice_at(self) -> str:
        """Hash: where each connected post-office client is (field clientID,
        value the node id holding its connection; §12 across nodes)."""
        return f"{self.prefix}po:at"

    @property
    def desk_lease(self) -> str:
        """String: the node holding the cluster's one operator desk (its id
        and a token of its process), ``PX`` like a node lease."""
        return f"{self.prefix}desk"

    def desk(self, node_id: str) -> str:
        """Hash: the operator desk's tickets of one node (§13); field dialog
        id, value the ticket as JSON."""
        return f"{self.prefix}desk:{node_id}"
