"""WeCom callback crypto against wechatpy's public vectors (tests/test_crypto.py),
round trips, and every way a ciphertext can be wrong."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.errors import BadCiphertext, BadSignature, WrongReceiveId
from libchat.doors.platforms.wecom_crypto import WeComCrypto, decode_key, signature

TOKEN = "123456"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
CORP = "wx49f0ab532d5d035a"
ECHOSTR = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
URL_SIG = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"

# wechatpy test_decrypt_message / test_encrypt_message
MSG_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTy"
    "eDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYy"
    "olBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWO"
    "MZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7ml"
    "sl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=")
MSG_SIG = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
REPLY = b"""<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""
REPLY_EXPECTED = b"""<xml>
<Encrypt><![CDATA[9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3]]></Encrypt>
<MsgSignature><![CDATA[407518b7649e86ef23978113f92d27afa9296533]]></MsgSignature>
<TimeStamp>1411525903</TimeStamp>
<Nonce><![CDATA[461056294]]></Nonce>
</xml>"""


def crypto(corp: str = CORP, fixed_random: bytes | None = None) -> WeComCrypto:
    if fixed_random is None:
        return WeComCrypto(TOKEN, AES_KEY, corp)
    return WeComCrypto(TOKEN, AES_KEY, corp, random_bytes=lambda n: fixed_random[:n])


def raw_encrypt(plain: bytes) -> str:
    """AES-CBC of already padded bytes, to build malformed ciphertexts."""
    key = decode_key(AES_KEY)
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def test_url_verification_vector_decrypts_the_echostr() -> None:
    assert crypto().verify_url(URL_SIG, "1411443780", "437374425", ECHOSTR) == "5927782489442352469"


def test_url_verification_with_another_nonce_fails_the_signature() -> None:
    with pytest.raises(BadSignature):
        crypto().verify_url(URL_SIG, "1411443780", "437374424", ECHOSTR)


def test_signature_is_sha1_of_the_sorted_four_values() -> None:
    assert signature(TOKEN, "1411443780", "437374425", ECHOSTR) == URL_SIG
    assert signature(ECHOSTR, "437374425", "1411443780", TOKEN) == URL_SIG  # order-free


def test_uppercase_hex_signature_is_accepted() -> None:
    crypto().check_signature(URL_SIG.upper(), "1411443780", "437374425", ECHOSTR)


def test_message_vector_decrypts_to_the_xml() -> None:
    plain = crypto().decrypt_message(MSG_SIG, "1411525903", "461056294", MSG_ENCRYPT)
    assert b"<Content><![CDATA[test]]></Content>" in plain
    assert b"<FromUserName><![CDATA[messense]]></FromUserName>" in plain


def test_passive_reply_vector_matches_byte_for_byte() -> None:
    out = crypto(fixed_random=b"1234567890123456").encrypt_reply(REPLY, "1411525903", "461056294")
    assert out == REPLY_EXPECTED


def test_another_corp_id_is_refused_as_wrong_receive_id() -> None:
    with pytest.raises(WrongReceiveId):
        crypto(corp="wx0000000000000000").verify_url(URL_SIG, "1411443780", "437374425", ECHOSTR)
    assert issubclass(WrongReceiveId, BadCiphertext) and WrongReceiveId.status == 400
    assert BadSignature.status == 403


def test_aligned_plaintext_gets_a_whole_block_of_padding() -> None:
    c = crypto(fixed_random=b"R" * 16)
    msg = b"x" * (64 - 16 - 4 - len(CORP))  # 16 + 4 + msg + corp == 64
    raw = base64.b64decode(c.encrypt(msg))
    assert len(raw) == 96
    key = decode_key(AES_KEY)
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(raw) + dec.finalize()
    assert plain[-32:] == bytes([32]) * 32
    assert c.decrypt(c.encrypt(msg)) == msg


@pytest.mark.parametrize("bad", ["not base64!!", "", base64.b64encode(b"x" * 48).decode(),
                                 base64.b64encode(b"x" * 16).decode()])
def test_non_base64_or_misaligned_ciphertext_is_bad(bad: str) -> None:
    with pytest.raises(BadCiphertext):
        crypto().decrypt(bad)


def test_bad_padding_is_bad_ciphertext() -> None:
    plain = b"R" * 16 + struct.pack(">I", 1) + b"x" + CORP.encode()
    plain += b"\x00" * (32 - len(plain) % 32)  # zero padding is not PKCS#7
    with pytest.raises(BadCiphertext, match="padding"):
        crypto().decrypt(raw_encrypt(plain))


def test_padding_byte_over_32_is_bad_ciphertext() -> None:
    plain = b"R" * 16 + struct.pack(">I", 1) + b"x" + CORP.encode()
    pad = 64 - len(plain)
    plain += bytes([33]) * pad
    with pytest.raises(BadCiphertext):
        crypto().decrypt(raw_encrypt(plain))


def test_length_past_the_end_is_bad_ciphertext() -> None:
    plain = b"R" * 16 + struct.pack(">I", 10_000) + b"x" + CORP.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    with pytest.raises(BadCiphertext, match="length"):
        crypto().decrypt(raw_encrypt(plain))


def test_plaintext_shorter_than_the_header_is_bad_ciphertext() -> None:
    with pytest.raises(BadCiphertext, match="short"):
        crypto().decrypt(raw_encrypt(b"R" * 10 + bytes([22]) * 22))


def test_echostr_that_is_not_utf8_is_bad_ciphertext() -> None:
    c = crypto()
    enc = c.encrypt(b"\xff\xfe")
    with pytest.raises(BadCiphertext, match="UTF-8"):
        c.verify_url(c.sign("1", "2", enc), "1", "2", enc)


def test_encoding_aes_key_must_be_43_base64_characters() -> None:
    with pytest.raises(ValueError):
        WeComCrypto(TOKEN, AES_KEY[:-1], CORP)
    with pytest.raises(ValueError):
        WeComCrypto(TOKEN, "!" * 43, CORP)


def test_reply_envelope_refuses_a_nonce_that_would_break_cdata() -> None:
    with pytest.raises(ValueError):
        crypto().encrypt_reply(b"<xml/>", "1", "a]]>b")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(min_size=16, max_size=16))
def test_round_trip_any_message(message: bytes, rnd: bytes) -> None:
    c = crypto(fixed_random=rnd)
    enc = c.encrypt(message)
    assert len(base64.b64decode(enc)) % 32 == 0
    assert c.decrypt(enc) == message


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500), st.text(alphabet="0123456789", min_size=1, max_size=12),
       st.text(alphabet="abcdefghijklmnop0123456789", min_size=1, max_size=12))
def test_url_verification_round_trip(echo: str, timestamp: str, nonce: str) -> None:
    c = crypto()
    enc = c.encrypt(echo.encode("utf-8", "surrogatepass"))
    try:
        echo.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are not text WeCom can send
    assert c.verify_url(c.sign(timestamp, nonce, enc), timestamp, nonce, enc) == echo


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_corrupted_ciphertext_never_raises_anything_but_bad_ciphertext(noise: bytes) -> None:
    c = crypto()
    raw = bytearray(base64.b64decode(c.encrypt(b"<xml>hello</xml>")))
    for i, b in enumerate(noise):
        raw[i % len(raw)] ^= b
    try:
        assert c.decrypt(base64.b64encode(bytes(raw)).decode()) is not None
    except BadCiphertext:
        pass
