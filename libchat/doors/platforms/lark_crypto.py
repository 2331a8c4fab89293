"""Lark/Feishu event crypto, as the official SDKs (lark-oapi) do it.

- Encrypted events: ``{"encrypt": base64(iv + AES-256-CBC(PKCS#7(json)))}`` with
  key = sha256(encrypt_key) and the IV the first 16 bytes of the decoded value.
- ``X-Lark-Signature = sha256_hex(timestamp + nonce + encrypt_key + raw body)``
  (timestamp and nonce from ``X-Lark-Request-Timestamp`` / ``-Nonce``).
- The verification token is ``header.token`` in schema 2.0, ``token`` in 1.0.

AES and PKCS#7 are ``cryptography``'s; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import BadCiphertext, BadSignature, BadToken

IV = 16


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode("utf-8") + body).hexdigest()


def check_signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes,
                    given: str) -> None:
    """Raise :class:`BadSignature` unless ``given`` is the body's signature."""
    expected = signature(timestamp, nonce, encrypt_key, body)
    if not hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace")):
        raise BadSignature("X-Lark-Signature does not match")


def token_of(payload: Mapping[str, Any]) -> str | None:
    """The verification token of a (decrypted) callback, either schema."""
    if payload.get("schema") is not None:  # 2.0: only the header's token counts
        header = payload.get("header")
        token = header.get("token") if isinstance(header, Mapping) else None
    else:  # 1.0 events and url_verification
        token = payload.get("token")
    return token if isinstance(token, str) else None


def check_token(payload: Mapping[str, Any], verification_token: str) -> None:
    token = token_of(payload)
    if token is None or not hmac.compare_digest(token.encode(), verification_token.encode()):
        raise BadToken("verification token missing or wrong")


class LarkCrypto:
    """The AES side of one app's Encrypt Key."""

    def __init__(self, encrypt_key: str,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.encrypt_key = encrypt_key
        self.key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()
        self._random = random_bytes

    def encrypt(self, plaintext: bytes, iv: bytes | None = None) -> str:
        iv = self._random(IV) if iv is None else iv
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        enc = Cipher(algorithms.AES(self.key), modes.CBC(iv)).encryptor()
        return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> bytes:
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise BadCiphertext("encrypt is not base64") from None
        if len(raw) < 2 * IV or len(raw) % IV:
            raise BadCiphertext(f"ciphertext is {len(raw)} bytes")
        dec = Cipher(algorithms.AES(self.key), modes.CBC(raw[:IV])).decryptor()
        padded = dec.update(raw[IV:]) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise BadCiphertext("bad PKCS#7 padding") from None

    def decrypt_str(self, encrypt: str) -> str:
        try:
            return self.decrypt(encrypt).decode("utf-8")
        except UnicodeDecodeError:
            raise BadCiphertext("plaintext is not UTF-8") from None
