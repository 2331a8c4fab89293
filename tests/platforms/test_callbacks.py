"""Whole callbacks, pure: every input answered 2xx/4xx, and the good ones
carry the message to route (section 10's errors otherwise, nothing routed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.callbacks import lark_callback, wecom_callback
from libchat.doors.platforms.config import lark_app, wecom_app
from libchat.doors.platforms.lark_crypto import LarkCrypto, signature
from libchat.doors.platforms.wecom_crypto import WeComCrypto

from .test_lark_event import receive
from .test_wecom_crypto import AES_KEY, CORP, ECHOSTR, MSG_ENCRYPT, MSG_SIG, TOKEN, URL_SIG

WECOM = wecom_app("hr", {"corp_id": CORP, "agent_id": 1, "token": TOKEN,
                         "encoding_aes_key": AES_KEY, "secret": "s"})
LARK = lark_app("bot", {"app_id": "cli_a", "app_secret": "s", "verification_token": "vt-123",
                        "encrypt_key": "ek-456"})


def envelope(encrypt: str, extra: str = "") -> bytes:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[1]]></AgentID>{extra}</xml>").encode()


def wecom_post(msg_xml: bytes, corp: str = CORP) -> tuple[dict[str, str], bytes]:
    c = WeComCrypto(TOKEN, AES_KEY, corp)
    enc = c.encrypt(msg_xml)
    return {"msg_signature": c.sign("1700000000", "n1", enc), "timestamp": "1700000000",
            "nonce": "n1"}, envelope(enc)


TEXT_XML = ("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName>"
            "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            "<Content><![CDATA[查天气]]></Content><MsgId>1234567890</MsgId><AgentID>1</AgentID></xml>" % CORP).encode()


def test_url_verification_answers_the_echostr_exactly() -> None:
    a = wecom_callback(WECOM, "GET", {"msg_signature": [URL_SIG], "timestamp": ["1411443780"],
                                      "nonce": ["437374425"], "echostr": [ECHOSTR]}, b"")
    assert (a.status, a.body, a.inbound) == (200, b"5927782489442352469", None)


def test_query_in_twisted_request_args_form() -> None:
    args = {b"msg_signature": [URL_SIG.encode()], b"timestamp": [b"1411443780"],
            b"nonce": [b"437374425"], b"echostr": [ECHOSTR.encode()]}
    assert wecom_callback(WECOM, "GET", args, b"").body == b"5927782489442352469"


def test_echostr_whose_plus_signs_were_decoded_to_spaces_still_verifies() -> None:
    assert "+" in ECHOSTR
    a = wecom_callback(WECOM, "GET", {"msg_signature": URL_SIG, "timestamp": "1411443780",
                                      "nonce": "437374425", "echostr": ECHOSTR.replace("+", " ")}, b"")
    assert (a.status, a.body) == (200, b"5927782489442352469")


def test_url_verification_bad_signature_or_missing_parts() -> None:
    q = {"msg_signature": URL_SIG, "timestamp": "1411443780", "nonce": "437374424", "echostr": ECHOSTR}
    assert wecom_callback(WECOM, "GET", q, b"").status == 403
    assert wecom_callback(WECOM, "GET", {k: v for k, v in q.items() if k != "echostr"}, b"").status == 400
    assert wecom_callback(WECOM, "GET", {}, b"").status == 403


def test_wechatpy_post_vector_routes_the_text() -> None:
    a = wecom_callback(WECOM, "POST", {"msg_signature": MSG_SIG, "timestamp": "1411525903",
                                       "nonce": "461056294"}, envelope(MSG_ENCRYPT))
    assert a.status == 200 and a.body == b""
    assert a.inbound is not None and a.inbound.content == "test"
    assert a.inbound.dialog_id == "wecom:hr:messense"


def test_good_post_is_answered_empty_with_the_message() -> None:
    query, body = wecom_post(TEXT_XML)
    a = wecom_callback(WECOM, "POST", query, body)
    assert (a.status, a.body) == (200, b"")
    assert a.inbound is not None and a.inbound.event()["messages"]["content"] == "查天气"
    assert a.inbound.dedupe_key == "msgid:1234567890"


@pytest.mark.parametrize("case, status", [("bad_signature", 403), ("no_signature", 403),
                                          ("wrong_corp", 400), ("doctype", 400),
                                          ("oversized", 413), ("garbage", 400), ("put", 405)])
def test_refused_posts_route_nothing(case: str, status: int) -> None:
    query, body = wecom_post(TEXT_XML, corp="wx_other_corp" if case == "wrong_corp" else CORP)
    method = "POST"
    if case == "bad_signature":
        query["msg_signature"] = "0" * 40
    elif case == "no_signature":
        del query["msg_signature"]
    elif case == "doctype":
        body = b'<!DOCTYPE xml [<!ENTITY x "y">]>' + body
    elif case == "oversized":
        body = envelope("A" * (1024 * 1024))
    elif case == "garbage":
        body = b"\x00\x01garbage"
    elif case == "put":
        method = "PUT"
    a = wecom_callback(WECOM, method, query, body)
    assert a.status == status and a.inbound is None and a.why


def test_lark_challenge_plain_and_encrypted() -> None:
    plain = json.dumps({"challenge": "c1", "token": "vt-123", "type": "url_verification"}).encode()
    a = lark_callback(LARK, "POST", {}, plain)
    assert (a.status, json.loads(a.body)) == (200, {"challenge": "c1"})
    enc = json.dumps({"encrypt": LarkCrypto("ek-456").encrypt(plain)}).encode()
    assert json.loads(lark_callback(LARK, "POST", {}, enc).body) == {"challenge": "c1"}


def test_lark_message_is_answered_at_once_with_the_message() -> None:
    body = json.dumps({"encrypt": LarkCrypto("ek-456").encrypt(json.dumps(receive("text", {"text": "hi"})).encode())}).encode()
    headers = {"x-lark-request-timestamp": "1", "x-lark-request-nonce": "n",
               "x-lark-signature": signature("1", "n", "ek-456", body)}
    a = lark_callback(LARK, "POST", headers, body)
    assert a.status == 200 and a.inbound is not None and a.inbound.content == "hi"
    headers["x-lark-signature"] = "0" * 64
    assert lark_callback(LARK, "POST", headers, body).status == 403
    assert lark_callback(LARK, "GET", {}, b"").status == 405


def test_lark_group_without_mention_is_acknowledged_not_routed() -> None:
    body = json.dumps(receive("text", {"text": "hello"}, chat_type="group")).encode()
    a = lark_callback(LARK, "POST", {}, body, bot_open_id="ou_bot")
    assert a.status == 200 and a.inbound is None


queries = st.dictionaries(st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr", "x"]),
                          st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=2),
                                    st.binary(max_size=20)), max_size=5)
bodies = st.one_of(st.binary(max_size=400),
                   st.builds(envelope, st.text(alphabet="ABCabc+/=0123", max_size=100)),
                   st.builds(lambda s: envelope(s).replace(b"<xml>", b"<!DOCTYPE a><xml>"), st.text(max_size=5)))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GET", "POST", "HEAD", "PUT"]), queries, bodies)
def test_fuzz_wecom_every_input_is_answered_2xx_or_4xx(method: str, query: Any, body: bytes) -> None:
    a = wecom_callback(WECOM, method, query, body)
    assert 200 <= a.status < 300 or 400 <= a.status < 500
    if a.status >= 400:
        assert a.inbound is None


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["POST", "GET"]),
       st.dictionaries(st.sampled_from(["x-lark-signature", "x-lark-request-timestamp",
                                        "x-lark-request-nonce"]), st.text(max_size=20), max_size=3),
       st.one_of(st.binary(max_size=300),
                 st.builds(lambda v: json.dumps(v).encode(),
                           st.dictionaries(st.sampled_from(["encrypt", "type", "token", "challenge", "schema",
                                                            "header", "event"]),
                                           st.one_of(st.text(max_size=30), st.integers(),
                                                     st.dictionaries(st.text(max_size=6), st.text(max_size=6))),
                                           max_size=5))))
def test_fuzz_lark_every_input_is_answered_2xx_or_4xx(method: str, headers: Any, body: bytes) -> None:
    a = lark_callback(LARK, method, headers, body)
    assert 200 <= a.status < 300 or 400 <= a.status < 500
