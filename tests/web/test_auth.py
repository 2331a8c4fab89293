"""Identity for the web doors: JWT (HS256, sub, exp) or development mode; libchat-token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from libchat.doors.web.auth import Authenticator, Unauthorized, main, mint, read_secret

SECRET = b"unit-test-secret-of-32-bytes-or-more-000"
NOW = 1_700_000_000.0


def bearer(token: str) -> dict[str, str | None]:
    return {"authorization": f"Bearer {token}"}


def test_a_token_names_its_sub_until_it_expires() -> None:
    clock = [NOW]
    auth = Authenticator(SECRET, now=lambda: clock[0])
    token = mint(SECRET, "alice", ttl=60, now=NOW)
    assert auth.rest_user(bearer(token)) == "alice"
    assert auth.websocket_user({}, {"token": [token]}) == "alice"
    clock[0] = NOW + 60
    with pytest.raises(Unauthorized, match="expired"):
        auth.rest_user(bearer(token))
    forever = mint(SECRET, "bob", ttl=None, now=NOW)
    assert "exp" not in jwt.decode(forever, SECRET, algorithms=["HS256"])
    assert auth.rest_user(bearer(forever)) == "bob"


@pytest.mark.parametrize("token", [
    "", "garbage", mint(b"another-secret-of-32-bytes-or-more-0000", "alice"),
    jwt.encode({"iat": 1}, SECRET, algorithm="HS256"),  # no sub
    jwt.encode({"sub": ""}, SECRET, algorithm="HS256"),  # empty user
    jwt.encode({"sub": "alice"}, SECRET * 2, algorithm="HS512"),  # another algorithm
    jwt.encode({"sub": "alice"}, None, algorithm="none"),
])
def test_bad_tokens_are_refused(token: str) -> None:
    auth = Authenticator(SECRET)
    with pytest.raises(Unauthorized):
        auth.rest_user(bearer(token))
    with pytest.raises(Unauthorized):
        auth.websocket_user({}, {"token": [token]})


def test_with_a_secret_dev_identities_and_query_tokens_on_rest_are_refused() -> None:
    auth = Authenticator(SECRET)
    with pytest.raises(Unauthorized):
        auth.rest_user({"x-user-id": "alice"})
    with pytest.raises(Unauthorized):
        auth.websocket_user({}, {"user_id": ["alice"]})
    assert not auth.dev_mode


def test_development_mode_trusts_the_named_user() -> None:
    auth = Authenticator(None)
    assert auth.dev_mode
    assert auth.rest_user({"x-user-id": "alice"}) == "alice"
    assert auth.websocket_user({}, {"user_id": ["bob"]}) == "bob"
    assert auth.websocket_user({"x-user-id": "carol"}, {}) == "carol"
    for headers, params in [({}, {}), ({"x-user-id": "x" * 257}, {})]:
        with pytest.raises(Unauthorized):
            auth.rest_user(headers)
        with pytest.raises(Unauthorized):
            auth.websocket_user(headers, params)
    with pytest.raises(Unauthorized):
        auth.rest_user(bearer(mint(SECRET, "alice")))


def test_secret_from_option_or_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  from-a-file \n")
    assert read_secret(None, str(path)) == b"from-a-file"
    assert read_secret("s", None) == b"s"
    assert read_secret(None, None) is None
    with pytest.raises(ValueError):
        read_secret("s", str(path))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError):
        read_secret(None, str(tmp_path / "empty"))


def test_libchat_token_prints_a_token_the_server_accepts(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    assert main(["alice", "--secret-file", str(path), "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    assert Authenticator(SECRET).rest_user(bearer(token)) == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120
    with pytest.raises(SystemExit):
        main(["alice"])  # a secret is required
