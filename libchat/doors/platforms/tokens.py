"""An access token kept for its lifetime minus a margin (WeCom ``gettoken``,
Lark ``tenant_access_token/internal``).

The sender asks :meth:`TokenCache.current`; None means fetch one (and
:meth:`TokenCache.fetching` tells whether a fetch is already under way, so
concurrent sends share it), then :meth:`TokenCache.store`. An answer saying
the token is bad (WeCom 40001/40014/42001, Lark 99991661/99991663)
:meth:`TokenCache.invalidate`\\ s exactly the token that was used, so a token
fetched meanwhile by another send is kept.
"""

from __future__ import annotations

from typing import Protocol

MARGIN = 300.0  # seconds before the platform's expiry that the token is dropped


class Clock(Protocol):
    def seconds(self) -> float: ...


class TokenCache:
    def __init__(self, clock: Clock, margin: float = MARGIN) -> None:
        self.clock = clock
        self.margin = margin
        self._token: str | None = None
        self._until = 0.0
        self.fetches = 0
        self._fetching = False

    def current(self) -> str | None:
        if self._token is not None and self.clock.seconds() < self._until:
            return self._token
        return None

    def fetching(self) -> bool:
        return self._fetching

    def begin_fetch(self) -> None:
        self._fetching = True
        self.fetches += 1

    def store(self, token: str, expires_in: float) -> None:
        """Keep ``token`` for ``expires_in`` seconds less the margin (at least
        half its lifetime, for platforms that hand out short tokens)."""
        self._fetching = False
        life = max(expires_in - self.margin, expires_in / 2)
        self._token, self._until = token, self.clock.seconds() + life

    def fetch_failed(self) -> None:
        self._fetching = False

    def invalidate(self, token: str) -> None:
        if token == self._token:
            self._token, self._until = None, 0.0
