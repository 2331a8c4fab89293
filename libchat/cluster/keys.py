"""The names of every Redis key libchat uses (one place, so docs/scaleout.md
and the scripts cannot disagree with the code).

Ids are used as they are inside key names: dialog and node ids never contain
whitespace (CONTRACT §1/§14), and Redis keys are binary-safe anyway.
"""

from __future__ import annotations

import attrs

DEFAULT_PREFIX = "lc:"


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
