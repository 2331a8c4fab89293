"""Apps, their secrets and clientID globs, and signed expiring tokens (JWT HS256).

The signing key is ``token_key`` from ``[postoffice]`` when configured (tokens
then survive a restart); otherwise a random per-process key (a restart
invalidates every token, and clients fetch a new one, as the seed's do).
"""
from __future__ import annotations

import fnmatch
import hmac
import secrets
from typing import Any

import attrs
import jwt

DEFAULT_TTL = 30 * 24 * 3600


@attrs.frozen
class App:
    appid: str
    secret: str
    clients: tuple[str, ...]

    def may_use(self, client_id: str) -> bool:
        return any(fnmatch.fnmatchcase(client_id, g) for g in self.clients)


class Unauthorized(Exception):
    pass


class Tokens:
    def __init__(self, apps: dict[str, App], now: Any, ttl: int = DEFAULT_TTL,
                 key: str | None = None) -> None:
        self.apps = apps
        self.now = now
        self.ttl = ttl
        self.key = key or secrets.token_urlsafe(32)

    def issue(self, appid: str, secret: str) -> dict[str, Any]:
        app = self.apps.get(appid)
        expected = app.secret if app is not None else "\0" * 32
        ok = hmac.compare_digest(expected.encode(), secret.encode())
        if app is None or not ok:
            raise Unauthorized("wrong appid/secret")
        exp = int(self.now()) + self.ttl
        token = jwt.encode({"sub": appid, "exp": exp}, self.key, algorithm="HS256")
        return {"expires": exp * 1000, "token": token, "ttl": self.ttl}

    def check(self, token: str) -> App:
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"],
                                options={"verify_exp": False, "require": ["exp", "sub"]})
        except jwt.PyJWTError:
            raise Unauthorized("bad token") from None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self.now():
            raise Unauthorized("expired token")
        app = self.apps.get(str(claims.get("sub")))
        if app is None:
            raise Unauthorized("unknown app")
        return app
