"""The ``[postoffice]`` and ``[postoffice.apps.APPID]`` config tables (section 9)
and building the hub's listener from them and ``--postoffice``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.web import server

from libchat import config
from libchat.doors.postoffice.hub import DEFAULT_QUEUE_BOUND, Hub, OfflineQueue
from libchat.doors.postoffice.seam import IOfflineQueue
from libchat.doors.postoffice.server import HubFactory, site
from libchat.doors.postoffice.tokens import DEFAULT_TTL, App, Tokens

TABLE = config.register(config.Table(
    "postoffice",
    keys=(
        config.Key("max_connections", kind=int, default=20000,
                   help="Connections at most; over it HTTP 503 before the upgrade."),
        config.Key("offline_ttl", kind=float, default=300.0,
                   help="Seconds a message waits for an absent target."),
        config.Key("queue_bound", kind=int, default=DEFAULT_QUEUE_BOUND,
                   help="Queued messages per absent target; over it UNDELIVERABLE."),
        config.Key("token_ttl", kind=int, default=DEFAULT_TTL, help="Token lifetime, seconds."),
        config.Key("token_key", secret=True,
                   help="HS256 key for tokens (absent: per-process, lost on restart)."),
        config.Key("rate", kind=float, default=200.0,
                   help="Envelopes per second one connection may send."),
    ),
    tables=(config.Table("apps", named=True, keys=(
        config.Key("secret", secret=True, required=True),
        config.Key("clients", kind=list, items=str, required=True),
    )),),
    help="The post-office hub (docs/postoffice.md).",
))

DEFAULTS = {k.name: k.default for k in TABLE.keys}


def build(tables: dict[str, Any], data: Path, clock: Any, max_frame: int = 1 << 20,
          offline_queue: Callable[[int], IOfflineQueue] | None = None
          ) -> tuple[Hub, server.Site]:
    """The hub and its site: the offline queue lives in ``data/postoffice.jsonl``,
    or is ``offline_queue(queue_bound)`` (with ``--redis``: ``lambda bound:
    RedisOfflineQueue(conns, keys, bound, clock=reactor)``)."""
    section = {**DEFAULTS, **tables.get("postoffice", {})}
    apps = {name: App(name, a["secret"].reveal(), tuple(a["clients"]))
            for name, a in section.get("apps", {}).items()}
    key = section.get("token_key")
    tokens = Tokens(apps, clock.seconds, ttl=section["token_ttl"],
                    key=key.reveal() if key is not None else None)
    data.mkdir(parents=True, exist_ok=True)
    queue: IOfflineQueue = (OfflineQueue(data / "postoffice.jsonl", section["queue_bound"])
                            if offline_queue is None else offline_queue(section["queue_bound"]))
    hub = Hub(clock, offline_ttl=section["offline_ttl"], queue=queue)
    factory = HubFactory(hub, tokens, max_connections=section["max_connections"],
                         rate=section["rate"], max_frame=max_frame)
    return hub, site(factory)
