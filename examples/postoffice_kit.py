"""A small client kit for post-office services (CONTRACT section 12).

``ServiceClient`` gets a token, connects as ``client_id``, answers each
``msg`` envelope with ``await handler(envelope)`` (a reply content, or None
for no reply) sent back to the envelope's ``from``, sends a heartbeat to
itself every ``heartbeat`` seconds (the hub echoes it back: the kit ignores
incoming heartbeats), refreshes the token before ``expires`` (reconnecting
with the new one) and reconnects with capped, fully jittered exponential
back-off.  Stdlib plus ``websockets`` (>= 13, the asyncio client).
"""
from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.parse
import urllib.request
from typing import Any, Awaitable, Callable

from websockets.asyncio.client import connect

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0,
            rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    return rand() * min(cap, base * (2 ** min(attempt, 30)))


def fetch_token(token_url: str, appid: str, secret: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET token_url?appid=&secret=`` -> ``{"expires": ms, "token", "ttl"}``."""
    query = urllib.parse.urlencode({"appid": appid, "secret": secret})
    with urllib.request.urlopen(f"{token_url}?{query}", timeout=timeout) as r:
        body: dict[str, Any] = json.load(r)
    return body


class ServiceClient:
    def __init__(self, hub_url: str, token_url: str, appid: str, secret: str,
                 client_id: str, handler: Handler, *, heartbeat: float = 20.0,
                 refresh_margin: float = 60.0, base: float = 0.5, cap: float = 30.0) -> None:
        self.hub_url, self.token_url = hub_url, token_url
        self.appid, self.secret, self.client_id = appid, secret, client_id
        self.handler, self.heartbeat = handler, heartbeat
        self.refresh_margin, self.base, self.cap = refresh_margin, base, cap
        self.connects = 0               # successful connections so far (tests, logs)
        self._stopping = False
        self._ws: Any = None
        self._token: dict[str, Any] | None = None

    def _token_fresh(self) -> bool:
        return (self._token is not None
                and self._token["expires"] / 1000 - time.time() > self.refresh_margin)

    async def run(self) -> None:
        """Connect and serve until stop(); every failure is retried with back-off."""
        attempt = 0
        while not self._stopping:
            try:
                if not self._token_fresh():
                    self._token = await asyncio.to_thread(
                        fetch_token, self.token_url, self.appid, self.secret)
                await self._session()
                attempt = 0             # a session that opened resets the back-off
                continue
            except Exception:           # refused, dropped, token server down: retry
                if self._stopping:
                    break
            await asyncio.sleep(backoff(attempt, self.base, self.cap))
            attempt += 1

    async def _session(self) -> None:
        assert self._token is not None
        url = f"{self.hub_url}?{urllib.parse.urlencode({'clientID': self.client_id})}"
        headers = {"Authorization": f"Bearer {self._token['token']}"}
        async with connect(url, additional_headers=headers) as ws:
            self._ws = ws
            self.connects += 1
            until_refresh = self._token["expires"] / 1000 - time.time() - self.refresh_margin
            tasks = [asyncio.ensure_future(self._beat(ws)),
                     asyncio.ensure_future(self._serve(ws))]
            try:
                await asyncio.wait(tasks, timeout=max(1.0, until_refresh),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                self._ws = None
            for t in tasks:             # surface a dropped connection to run()
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            self._token = None          # refresh time (or the hub closed): new token

    async def _beat(self, ws: Any) -> None:
        while True:
            await ws.send(json.dumps({"from": self.client_id, "to": self.client_id,
                                      "subject": "heartbeat", "content": "", "type": "heartbeat"}))
            await asyncio.sleep(self.heartbeat)

    async def _serve(self, ws: Any) -> None:
        async for raw in ws:
            envelope = json.loads(raw)
            if envelope.get("type") in ("heartbeat", "error"):
                continue                # our own echoed heartbeat; hub errors
            reply = await self.handler(envelope)
            if reply is not None:
                await ws.send(json.dumps({"from": self.client_id, "to": envelope["from"],
                                          "subject": envelope.get("subject", ""),
                                          "content": reply, "type": "msg"},
                                         ensure_ascii=False))

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
