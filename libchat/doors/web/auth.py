"""Who is asking, for the web front doors (docs/web.md), and ``libchat-token``.

With a secret, a request names its user by an HS256 JWT whose ``sub`` is the
user id (``exp`` is honoured when present; ``"role": "operator"`` makes a
WebSocket an operator's, docs/operators.md); without one the server runs in
development mode and trusts ``X-User-Id`` (REST) or ``?user_id=`` (WebSocket,
with ``?role=operator`` for an operator).
Tokens are accepted in the query string only for WebSockets, because a browser
cannot set headers on one; elsewhere a URL would leak them into access logs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jwt

ALGORITHM = "HS256"
MAX_USER_ID = 256
DEFAULT_TTL = 24 * 3600.0
# PyJWT warns about HMAC keys shorter than the hash (RFC 7518 3.2)
MIN_SECRET = 32


class Unauthorized(Exception):
    """Answered with HTTP 401 (a refused WebSocket handshake included)."""


def read_secret(secret: str | None, secret_file: str | None) -> bytes | None:
    """The configured secret, from ``--auth-secret`` or ``--auth-secret-file``
    (its content, surrounding whitespace stripped). None means dev mode."""
    if secret and secret_file:
        raise ValueError("give --auth-secret or --auth-secret-file, not both")
    if secret_file:
        value = Path(secret_file).read_text("utf-8").strip()
        if not value:
            raise ValueError(f"{secret_file} is empty")
        return value.encode("utf-8")
    return secret.encode("utf-8") if secret else None


OPERATOR = "operator"


def mint(secret: bytes, user_id: str, ttl: float | None = DEFAULT_TTL,
         now: float | None = None, role: str | None = None) -> str:
    """A token for ``user_id``; ``ttl`` None makes one that never expires."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user_id, "iat": issued}
    if role is not None:
        claims["role"] = role
    if ttl is not None:
        claims["exp"] = issued + int(ttl)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _valid_user(user_id: object) -> str:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID:
        raise Unauthorized("user id must be 1..256 characters")
    return user_id


def _bearer(header: str | None) -> str | None:
    scheme, _, value = (header or "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    """Turns request credentials into a user id, or raises :class:`Unauthorized`."""

    def __init__(self, secret: bytes | None, now: Callable[[], float] = time.time,
                 leeway: float = 0.0) -> None:
        self.secret = secret
        self.now = now
        self.leeway = leeway

    @property
    def dev_mode(self) -> bool:
        return self.secret is None

    def user_from_token(self, token: str | None) -> str:
        return _valid_user(self.claims(token)["sub"])

    def claims(self, token: str | None) -> dict[str, object]:
        """The verified claims of a token (``sub`` present, ``exp`` not past)."""
        if self.secret is None:
            raise Unauthorized("tokens are not accepted in development mode")
        if not token:
            raise Unauthorized("missing bearer token")
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"require": ["sub"], "verify_exp": False})
        except jwt.InvalidTokenError as e:
            raise Unauthorized(f"invalid token: {e}") from None
        exp = claims.get("exp")
        # PyJWT checks exp against the wall clock; ours is injected (tests)
        if exp is not None and (not isinstance(exp, (int, float))
                                or exp + self.leeway <= self.now()):
            raise Unauthorized("token expired")
        return claims

    def rest_user(self, headers: Mapping[str, str | None]) -> str:
        """``headers`` maps lower-case names to values."""
        if self.secret is None:
            user = headers.get("x-user-id")
            if not user:
                raise Unauthorized("development mode: name the user in X-User-Id")
            return _valid_user(user)
        return self.user_from_token(_bearer(headers.get("authorization")))

    def websocket_user(self, headers: Mapping[str, str | None],
                       params: Mapping[str, Sequence[str]]) -> str:
        """A WebSocket handshake: the header first, then the query string."""
        return self.websocket_identity(headers, params)[0]

    def websocket_identity(self, headers: Mapping[str, str | None],
                           params: Mapping[str, Sequence[str]]) -> tuple[str, bool]:
        """(user id, is an operator) of a WebSocket handshake."""
        def param(name: str) -> str | None:
            values = params.get(name) or []
            return values[0] if values else None

        if self.secret is None:
            user = param("user_id") or headers.get("x-user-id")
            if not user:
                raise Unauthorized("development mode: name the user with ?user_id=")
            return _valid_user(user), param("role") == OPERATOR
        claims = self.claims(_bearer(headers.get("authorization")) or param("token"))
        return _valid_user(claims["sub"]), claims.get("role") == OPERATOR


def main(argv: list[str] | None = None) -> int:
    """``libchat-token USER``: print a token for USER signed with the server's secret."""
    parser = argparse.ArgumentParser(
        prog="libchat-token",
        description="Mint a JWT for a user, signed with the secret libchat runs with.")
    parser.add_argument("user_id", help="the user the token speaks for (its 'sub')")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--secret", help="the --auth-secret value")
    source.add_argument("--secret-file", help="the --auth-secret-file path")
    parser.add_argument("--role", choices=[OPERATOR],
                        help="add the claim \"role\": \"operator\" (docs/operators.md)")
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL,
                        help="seconds until the token expires (default: one day; "
                             "0: never)")
    args = parser.parse_args(argv)
    try:
        secret = read_secret(args.secret, args.secret_file)
        assert secret is not None
        _valid_user(args.user_id)
    except (OSError, ValueError, Unauthorized) as e:
        parser.exit(2, f"libchat-token: {e}\n")
    sys.stdout.write(mint(secret, args.user_id, args.ttl or None, role=args.role) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
