"""WeCom (企业微信) callback crypto, exactly as the platform's WXBizMsgCrypt does it.

- ``msg_signature = sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``
- key = base64decode(EncodingAESKey + "=") (32 bytes), AES-256-CBC, IV = key[:16]
- plaintext = 16 random bytes + uint32 big-endian length + message + receive id
  (the corp id), PKCS#7-padded to a multiple of **32** (a plaintext already
  aligned gets a whole 32-byte block of padding)

AES and PKCS#7 are ``cryptography``'s; nothing here does I/O. Every refusal is
an exception from :mod:`.errors` (signature 403, anything undecryptable or
addressed to another corp 400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import BadCiphertext, BadSignature, WrongReceiveId

BLOCK = 32  # WeCom pads to 32 bytes, not AES's 16
RANDOM_PREFIX = 16


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The SHA1 hex digest of the four values sorted and concatenated."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


def decode_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a 43-character EncodingAESKey (ValueError otherwise)."""
    if len(encoding_aes_key) != 43:
        raise ValueError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as e:
        raise ValueError(f"EncodingAESKey is not base64: {e}") from None
    if len(key) != 32:  # pragma: no cover - 43 base64 chars + "=" are 32 bytes
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


class WeComCrypto:
    """One app's signer and cipher: its token, EncodingAESKey and corp id."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.token = token
        self.key = decode_key(encoding_aes_key)
        self.receive_id = receive_id
        self._random = random_bytes

    # -- signatures -------------------------------------------------------

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return signature(self.token, timestamp, nonce, encrypt)

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str,
                        encrypt: str) -> None:
        """Raise :class:`BadSignature` unless ``msg_signature`` is right."""
        expected = self.sign(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode("utf-8", "replace")):
            raise BadSignature("msg_signature does not match")

    # -- AES --------------------------------------------------------------

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, message: bytes) -> str:
        """The base64 ``Encrypt`` value carrying ``message`` to this corp."""
        rid = self.receive_id.encode()
        plain = self._random(RANDOM_PREFIX) + struct.pack(">I", len(message)) + message + rid
        padder = padding.PKCS7(BLOCK * 8).padder()
        padded = padder.update(plain) + padder.finalize()
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> bytes:
        """The message inside an ``Encrypt`` value; the receive id must be ours."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise BadCiphertext("Encrypt is not base64") from None
        if not raw or len(raw) % BLOCK:
            raise BadCiphertext(f"ciphertext is {len(raw)} bytes, not a multiple of {BLOCK}")
        dec = self._cipher().decryptor()
        padded = dec.update(raw) + dec.finalize()
        unpadder = padding.PKCS7(BLOCK * 8).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise BadCiphertext("bad PKCS#7 padding") from None
        if len(plain) < RANDOM_PREFIX + 4:
            raise BadCiphertext("plaintext too short")
        (length,) = struct.unpack(">I", plain[RANDOM_PREFIX:RANDOM_PREFIX + 4])
        start = RANDOM_PREFIX + 4
        if start + length > len(plain):
            raise BadCiphertext("message length points past the end")
        message, rid = plain[start:start + length], plain[start + length:]
        if not hmac.compare_digest(rid, self.receive_id.encode()):
            raise WrongReceiveId("message is for another receive id")
        return message

    # -- the two callback shapes -----------------------------------------

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """``GET ?msg_signature&timestamp&nonce&echostr`` (values URL-decoded):
        the decrypted echostr, to be answered exactly as it is."""
        self.check_signature(msg_signature, timestamp, nonce, echostr)
        try:
            return self.decrypt(echostr).decode("utf-8")
        except UnicodeDecodeError:
            raise BadCiphertext("echostr is not UTF-8") from None

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str,
                        encrypt: str) -> bytes:
        """A POSTed envelope's ``Encrypt``: signature first, then the message XML."""
        self.check_signature(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)

    def encrypt_reply(self, message: bytes, timestamp: str, nonce: str) -> bytes:
        """A passive reply envelope (the answer body to a POST), signed."""
        if "]]>" in nonce or not timestamp.isdigit():
            raise ValueError("nonce/timestamp not fit for the reply envelope")
        encrypt = self.encrypt(message)
        sig = self.sign(timestamp, nonce, encrypt)
        return (f"<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n"
                f"<MsgSignature><![CDATA[{sig}]]></MsgSignature>\n"
                f"<TimeStamp>{timestamp}</TimeStamp>\n"
                f"<Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>").encode("utf-8")
