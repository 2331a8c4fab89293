"""The Lua scripts (``lua/*.lua``), loaded once and called by hash.

Redis forgets loaded scripts when it restarts; a call that meets ``NOSCRIPT``
loads the script again (``SCRIPT LOAD``) and retries once, so a node needs no
restart after Redis had one. We call ``EVALSHA`` ourselves rather than through
txredisapi's ``eval`` (which also retries): its hash cache is per connection
and its calls have no timeout of ours.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from libchat.cluster.connect import RedisConnections

log = Logger()

NAMES = ("claim", "append", "release", "lease_acquire", "lease_refresh", "lease_drop")


def source(name: str) -> bytes:
    """The text of one script, from the package."""
    return (resources.files("libchat.cluster") / "lua" / f"{name}.lua").read_bytes()


class Scripts:
    """Calls the scripts by SHA1 on one :class:`RedisConnections`."""

    def __init__(self, conns: RedisConnections, names: tuple[str, ...] = NAMES) -> None:
        """``names``: the set this object calls (the cluster's by default; a
        door store passes its own)."""
        self.conns = conns
        self.sources = {n: source(n) for n in names}
        self.shas = {n: hashlib.sha1(s).hexdigest() for n, s in self.sources.items()}
        self.loads = 0  # how many SCRIPT LOADs were needed (one round at start, one per restart)

    @defer.inlineCallbacks
    def load_all(self) -> Any:
        """Load every script (at start, so the first real call needs no retry)."""
        for name in self.sources:
            yield self._load(name)

    @defer.inlineCallbacks
    def _load(self, name: str) -> Any:
        sha = yield self.conns.call("SCRIPT", "LOAD", self.sources[name])
        sha = sha.decode() if isinstance(sha, bytes) else sha
        if sha != self.shas[name]:
            raise RuntimeError(f"redis: SCRIPT LOAD of {name} gave {sha}, not {self.shas[name]}")
        self.loads += 1

    @defer.inlineCallbacks
    def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script; Redis errors it raises fail as ``txredisapi.ResponseError``."""
        argv = ("EVALSHA", self.shas[name], len(keys), *keys, *args)
        try:
            return (yield self.conns.call(*argv))
        except txredisapi.ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        log.info("redis: script {name} was not loaded (a Redis restart?): loading it",
                 name=name)
        yield self._load(name)
        return (yield self.conns.call(*argv))
