"""Lark callbacks: section 10's checks in order (size, signature, decryption,
verification token), url_verification plain and encrypted, and
``im.message.receive_v1`` mapped into the unified form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.errors import (
    BadCiphertext, BadPayload, BadSignature, BadToken, BodyTooLarge, CallbackRejected)
from libchat.doors.platforms.lark_crypto import LarkCrypto, signature
from libchat.doors.platforms.lark_event import (
    MESSAGE_RECEIVE, URL_VERIFICATION, dedupe_key, open_callback, strip_mentions, to_inbound)
from libchat.protocol.events import check_upstream

VT = "vt-123"
EK = "ek-456"
BOT = "ou_bot"


def receive(message_type: str, content: dict[str, Any], chat_type: str = "p2p",
            mentions: list[dict[str, Any]] | None = None, event_id: str = "ev-1",
            sender_type: str = "user") -> dict[str, Any]:
    return {"schema": "2.0",
            "header": {"event_id": event_id, "token": VT, "create_time": "1603977298000000",
                       "event_type": MESSAGE_RECEIVE, "tenant_key": "tk", "app_id": "cli_a"},
            "event": {"sender": {"sender_id": {"union_id": "on_u", "user_id": "u1", "open_id": "ou_user"},
                                 "sender_type": sender_type, "tenant_key": "tk"},
                      "message": {"message_id": "om_1", "root_id": "", "parent_id": "",
                                  "create_time": "1609073151345", "chat_id": "oc_chat",
                                  "chat_type": chat_type, "message_type": message_type,
                                  "content": json.dumps(content), "mentions": mentions or []}}}


def mention(key: str, open_id: str, name: str = "Bot") -> dict[str, Any]:
    return {"key": key, "id": {"union_id": "on_x", "user_id": "", "open_id": open_id},
            "name": name, "tenant_key": "tk"}


def open_plain(payload: dict[str, Any], **kw: Any) -> Any:
    return open_callback(json.dumps(payload).encode(), {}, verification_token=VT, **kw)


def encrypted_body(payload: dict[str, Any]) -> bytes:
    return json.dumps({"encrypt": LarkCrypto(EK).encrypt(json.dumps(payload).encode())}).encode()


def signed_headers(body: bytes, key: str = EK) -> dict[str, str]:
    return {"x-lark-request-timestamp": "1700000000", "x-lark-request-nonce": "n1",
            "x-lark-signature": signature("1700000000", "n1", key, body)}


def test_url_verification_plain_answers_the_challenge() -> None:
    cb = open_plain({"challenge": "ajls384kdjx98XX", "token": VT, "type": "url_verification"})
    assert cb.kind == URL_VERIFICATION and cb.challenge_answer() == {"challenge": "ajls384kdjx98XX"}


def test_url_verification_encrypted_answers_the_challenge() -> None:
    body = encrypted_body({"challenge": "c-1", "token": VT, "type": "url_verification"})
    cb = open_callback(body, {}, verification_token=VT, encrypt_key=EK)
    assert cb.challenge_answer() == {"challenge": "c-1"}


def test_url_verification_with_a_wrong_token_is_403() -> None:
    with pytest.raises(BadToken) as info:
        open_plain({"challenge": "c", "token": "nope", "type": "url_verification"})
    assert info.value.status == 403


def test_signed_encrypted_event_opens() -> None:
    body = encrypted_body(receive("text", {"text": "hi"}))
    cb = open_callback(body, signed_headers(body), verification_token=VT, encrypt_key=EK)
    assert cb.kind == MESSAGE_RECEIVE and dedupe_key(cb.payload) == "event:ev-1"


def test_bad_signature_is_403_before_decryption() -> None:
    body = encrypted_body(receive("text", {"text": "hi"}))
    headers = signed_headers(body, key="other")
    with pytest.raises(BadSignature):
        open_callback(body, headers, verification_token=VT, encrypt_key=EK)


def test_encrypted_body_without_a_key_or_with_garbage_is_400() -> None:
    body = encrypted_body(receive("text", {"text": "hi"}))
    with pytest.raises(BadCiphertext):
        open_callback(body, {}, verification_token=VT)
    with pytest.raises(BadCiphertext):
        open_callback(b'{"encrypt": "AAAA"}', {}, verification_token=VT, encrypt_key=EK)
    with pytest.raises(BadCiphertext):
        open_callback(b'{"encrypt": 7}', {}, verification_token=VT, encrypt_key=EK)


def test_decrypted_non_json_is_bad_payload() -> None:
    body = json.dumps({"encrypt": LarkCrypto(EK).encrypt(b"hello world")}).encode()
    with pytest.raises(BadPayload):
        open_callback(body, {}, verification_token=VT, encrypt_key=EK)


def test_oversized_body_is_413() -> None:
    with pytest.raises(BodyTooLarge):
        open_callback(b" " * (1024 * 1024 + 1), {}, verification_token=VT)


@pytest.mark.parametrize("body", [b"", b"[]", b"not json", b'"x"', b"\xff"])
def test_non_object_bodies_are_400(body: bytes) -> None:
    with pytest.raises(BadPayload):
        open_callback(body, {}, verification_token=VT)


def test_schema_1_event_kind_and_dedupe() -> None:
    cb = open_plain({"uuid": "u-9", "token": VT, "ts": "1", "type": "event_callback",
                     "event": {"type": "message"}})
    assert cb.kind == "message" and dedupe_key(cb.payload) == "uuid:u-9"


def test_p2p_text_to_a_1001() -> None:
    inbound = to_inbound("bot", receive("text", {"text": "你好"}))
    assert inbound is not None
    assert inbound.dialog_id == "lark:bot:ou_user" and inbound.user_id == "lark:ou_user"
    assert inbound.messages() == {"content": "你好", "attachments": []}
    assert inbound.reply_to is not None and inbound.reply_to.to == "oc_chat"
    assert inbound.reply_to.mention is None
    check_upstream(inbound.event())


def test_group_text_with_the_bot_mentioned_strips_the_placeholder() -> None:
    payload = receive("text", {"text": "@_user_1 天气 @_user_2 怎么样"}, chat_type="group",
                      mentions=[mention("@_user_1", BOT), mention("@_user_2", "ou_other", "Tom")])
    inbound = to_inbound("bot", payload, bot_open_id=BOT)
    assert inbound is not None
    assert inbound.content == "天气 怎么样"
    assert inbound.dialog_id == "lark:bot:oc_chat:ou_user"
    assert inbound.reply_to is not None and inbound.reply_to.mention == "ou_user"


def test_group_message_without_a_mention_of_the_app_is_ignored() -> None:
    assert to_inbound("bot", receive("text", {"text": "hello"}, chat_type="group")) is None
    other = receive("text", {"text": "@_user_1 hi"}, chat_type="group",
                    mentions=[mention("@_user_1", "ou_other")])
    assert to_inbound("bot", other, bot_open_id=BOT) is None
    assert to_inbound("bot", other) is not None  # bot's open_id unknown: any mention counts


def test_messages_from_apps_are_not_routed() -> None:
    assert to_inbound("bot", receive("text", {"text": "x"}, sender_type="app")) is None


def test_image_and_file_attachments() -> None:
    image = to_inbound("bot", receive("image", {"image_key": "img_v2_1"}))
    assert image is not None and list(image.attachments) == [{"type": "image", "file_id": "img_v2_1"}]
    f = to_inbound("bot", receive("file", {"file_key": "file_v2_1", "file_name": "a.pdf"}))
    assert f is not None and list(f.attachments) == [{"type": "file", "name": "a.pdf", "file_id": "file_v2_1"}]
    check_upstream(f.event())


def test_post_text_and_images() -> None:
    post = {"title": "周报", "content": [
        [{"tag": "at", "user_id": "@_user_1", "user_name": "Bot"}, {"tag": "text", "text": " 第一行 "},
         {"tag": "a", "href": "http://x", "text": "链接"}],
        [{"tag": "img", "image_key": "img_2"}], [{"tag": "md", "text": "**b**"}]]}
    inbound = to_inbound("bot", receive("post", post, "group", [mention("@_user_1", BOT)]), BOT)
    assert inbound is not None
    assert inbound.content == "周报\n 第一行 链接\n\n**b**"
    assert list(inbound.attachments) == [{"type": "image", "file_id": "img_2"}]


def test_locale_wrapped_post_is_read_too() -> None:
    inbound = to_inbound("bot", receive("post", {"zh_cn": {"title": "", "content": [[{"tag": "text", "text": "x"}]]}}))
    assert inbound is not None and inbound.content == "x"


def test_unsupported_types_are_not_routed() -> None:
    assert to_inbound("bot", receive("sticker", {"file_key": "s"})) is None


def test_strip_mentions_keeps_longer_placeholders_whole() -> None:
    ms = [{"key": "@_user_1"}, {"key": "@_user_12"}]
    assert strip_mentions("@_user_12 a @_user_1 b @_all c", ms) == "a b c"


def test_content_that_is_not_json_is_bad_payload() -> None:
    payload = receive("text", {"text": "x"})
    payload["event"]["message"]["content"] = "{not json"
    with pytest.raises(BadPayload):
        to_inbound("bot", payload)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(json_values, st.dictionaries(st.sampled_from(["x-lark-signature", "x-lark-request-nonce",
                                                     "x-lark-request-timestamp"]), st.text(max_size=10)))
def test_fuzz_open_callback_only_rejects_with_a_status(value: Any, headers: dict[str, str]) -> None:
    try:
        cb = open_callback(json.dumps(value).encode(), headers, verification_token=VT, encrypt_key=EK)
    except CallbackRejected as e:
        assert e.status in (400, 403, 413)
        return
    try:
        to_inbound("bot", cb.payload)
    except CallbackRejected as e:
        assert e.status == 400


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["message_type", "chat_type", "content", "mentions", "chat_id"]),
                       json_values, max_size=5))
def test_fuzz_message_shapes_never_crash(fields: dict[str, Any]) -> None:
    payload = receive("text", {"text": "x"})
    payload["event"]["message"].update(fields)
    try:
        inbound = to_inbound("bot", payload)
    except CallbackRejected:
        return
    if inbound is not None:
        check_upstream(inbound.event())
