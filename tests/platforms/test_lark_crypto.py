"""Lark event crypto: the documented vector, signature, verification token,
round trips."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.errors import BadCiphertext, BadSignature, BadToken
from libchat.doors.platforms.lark_crypto import (
    LarkCrypto, check_signature, check_token, signature, token_of)


def test_documented_vector_decrypts_to_hello_world() -> None:
    assert LarkCrypto("test key").decrypt_str("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=") == "hello world"


def test_key_is_sha256_of_the_encrypt_key() -> None:
    assert LarkCrypto("test key").key == hashlib.sha256(b"test key").digest()


def test_encrypt_with_a_given_iv_is_iv_then_ciphertext() -> None:
    c = LarkCrypto("test key")
    vector = base64.b64decode("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=")
    assert base64.b64decode(c.encrypt(b"hello world", iv=vector[:16])) == vector


def test_signature_is_sha256_of_timestamp_nonce_key_body() -> None:
    body = b'{"encrypt":"abc"}'
    expected = hashlib.sha256(b"1600000000" + b"nonce-1" + b"ek" + body).hexdigest()
    assert signature("1600000000", "nonce-1", "ek", body) == expected
    check_signature("1600000000", "nonce-1", "ek", body, expected)
    with pytest.raises(BadSignature):
        check_signature("1600000000", "nonce-1", "ek", body + b" ", expected)
    with pytest.raises(BadSignature):
        check_signature("1600000001", "nonce-1", "ek", body, expected)


def test_verification_token_schema_2_and_1() -> None:
    v2 = {"schema": "2.0", "header": {"token": "vt"}}
    v1 = {"uuid": "u", "token": "vt", "event": {}}
    assert token_of(v2) == "vt" and token_of(v1) == "vt"
    check_token(v2, "vt")
    check_token(v1, "vt")
    for bad in ({"schema": "2.0", "header": {"token": "other"}}, {"schema": "2.0", "token": "vt"},
                {}, {"token": 5}):
        with pytest.raises(BadToken):
            check_token(bad, "vt")
    assert BadToken.status == 403


@pytest.mark.parametrize("bad", ["***", "", base64.b64encode(b"x" * 16).decode(),
                                 base64.b64encode(b"x" * 40).decode()])
def test_malformed_ciphertext_is_bad(bad: str) -> None:
    with pytest.raises(BadCiphertext):
        LarkCrypto("k").decrypt(bad)


def test_wrong_key_is_bad_ciphertext_or_garbage_never_a_crash() -> None:
    enc = LarkCrypto("right").encrypt(b'{"a": 1}')
    try:
        out = LarkCrypto("wrong").decrypt_str(enc)
    except BadCiphertext:
        return
    assert out != '{"a": 1}'


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64), st.binary(max_size=2000))
def test_round_trip(key: str, plaintext: bytes) -> None:
    c = LarkCrypto(key)
    assert c.decrypt(c.encrypt(plaintext)) == plaintext


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.binary(max_size=300))
def test_signature_accepts_its_own_output_only(ts: str, nonce: str, key: str, body: bytes) -> None:
    sig = signature(ts, nonce, key, body)
    check_signature(ts, nonce, key, body, sig)
    with pytest.raises(BadSignature):
        check_signature(ts, nonce, key, body + b"x", sig)
