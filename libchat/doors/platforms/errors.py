"""The ways a platform callback can be refused, each with its HTTP status.

Section 10 answers a bad signature or verification token with 403, content
that does not decrypt (or decrypts to another corp's message) with 400, XML
with a DOCTYPE or entities with 400, and a body over the limit with 413. The
endpoint code catches :class:`CallbackRejected` once and answers ``status``;
nothing is routed for any of them.
"""

from __future__ import annotations


class CallbackRejected(Exception):
    """A callback libchat refuses; ``status`` is the HTTP answer."""

    status = 400


class BadSignature(CallbackRejected):
    """``msg_signature`` / ``X-Lark-Signature`` does not match (403)."""

    status = 403


class BadToken(CallbackRejected):
    """The Lark verification token is missing or wrong (403)."""

    status = 403


class BadCiphertext(CallbackRejected):
    """Not base64, not a whole number of AES blocks, bad PKCS#7 padding, a
    length field pointing past the end, or not UTF-8 (400)."""


class WrongReceiveId(BadCiphertext):
    """The decrypted WeCom message names another receive id (corp id) (400)."""


class BadPayload(CallbackRejected):
    """Well-formed transport, but not the XML/JSON shape the platform sends (400)."""


class ForbiddenXML(BadPayload):
    """XML with a DOCTYPE, an entity declaration or an external reference:
    refused before anything is expanded (400)."""


class BodyTooLarge(CallbackRejected):
    """The body is over the callback limit (413)."""

    status = 413
