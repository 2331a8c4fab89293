"""WeCom XML: hardened parsing (no DOCTYPE, no entities, bounded), the
envelope, the message types, and the section 10 mapping into a 1001."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.errors import BadPayload, BodyTooLarge, CallbackRejected, ForbiddenXML
from libchat.doors.platforms.wecom_xml import (
    MAX_BODY, dedupe_key, parse_envelope, parse_message, parse_xml, to_inbound)
from libchat.protocol.events import check_upstream as parse_upstream

ENVELOPE = (b"<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n"
            b"<Encrypt><![CDATA[RgqE==]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>")


def message(msg_type: str, extra: str = "", msg_id: str | None = "4363689963896700987") -> bytes:
    mid = f"<MsgId>{msg_id}</MsgId>" if msg_id else ""
    return (f"<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>"
            f"<FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1348831860</CreateTime>"
            f"<MsgType><![CDATA[{msg_type}]]></MsgType>{extra}{mid}<AgentID>1</AgentID></xml>").encode()


def test_envelope_fields() -> None:
    assert parse_envelope(ENVELOPE) == {"ToUserName": "wx49f0ab532d5d035a", "Encrypt": "RgqE==",
                                        "AgentID": "1000002"}


def test_envelope_without_encrypt_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse_envelope(b"<xml><ToUserName>x</ToUserName></xml>")


@pytest.mark.parametrize("body", [
    b'<!DOCTYPE xml [<!ENTITY a "boom">]><xml><Encrypt>&a;</Encrypt></xml>',
    b"<!DOCTYPE xml><xml><Encrypt>x</Encrypt></xml>",
    b'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:1/x.dtd"><xml><Encrypt>x</Encrypt></xml>',
    b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><Encrypt>&lol2;</Encrypt></xml>',
    b'<!DOCTYPE xml [<!ENTITY ext SYSTEM "file:///etc/passwd">]><xml><Encrypt>&ext;</Encrypt></xml>',
])
def test_doctype_and_entities_are_forbidden_never_expanded(body: bytes) -> None:
    with pytest.raises(ForbiddenXML) as info:
        parse_envelope(body)
    assert info.value.status == 400


def test_undeclared_entity_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse_xml(b"<xml><Encrypt>&nbsp;</Encrypt></xml>")


def test_predefined_character_references_are_plain_text() -> None:
    assert parse_xml(b"<xml><Content>a &lt;b&gt; &amp; &#20320;</Content></xml>") == {"Content": "a <b> & 你"}


def test_oversized_body_is_413_before_parsing() -> None:
    body = b"<xml><Encrypt>" + b"A" * MAX_BODY + b"</Encrypt></xml>"
    with pytest.raises(BodyTooLarge) as info:
        parse_envelope(body)
    assert info.value.status == 413


@pytest.mark.parametrize("body", [b"", b"<xml", b"not xml", b"<other><Encrypt>x</Encrypt></other>",
                                  b"\xff\xfe<xml/>", b"<xml><a></b></xml>"])
def test_malformed_xml_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_envelope(body)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(BadPayload, match="deep"):
        parse_xml(b"<xml>" + b"<a>" * 50 + b"x" + b"</a>" * 50 + b"</xml>")


def test_nested_and_repeated_elements() -> None:
    doc = parse_xml(b"<xml><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>a</PicMd5Sum></item>"
                    b"<item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo></xml>")
    assert doc == {"SendPicsInfo": {"Count": "2", "PicList": {"item": [{"PicMd5Sum": "a"},
                                                                        {"PicMd5Sum": "b"}]}}}


def test_text_message_to_a_1001() -> None:
    msg = parse_message(message("text", "<Content><![CDATA[你好 world]]></Content>"))
    inbound = to_inbound("hr", "wx49f0ab532d5d035a", msg)
    assert inbound is not None
    assert inbound.dialog_id == "wecom:hr:zhangsan"
    assert inbound.user_id == "wecom:wx49f0ab532d5d035a:zhangsan"
    assert inbound.dedupe_key == "msgid:4363689963896700987"
    assert inbound.reply_to is not None and inbound.reply_to.to == "zhangsan"
    event = inbound.event(intent="helpdesk")
    assert event == {"event_type": 1001, "dialog_id": "wecom:hr:zhangsan",
                     "user_id": "wecom:wx49f0ab532d5d035a:zhangsan",
                     "message_id": "wecom-4363689963896700987",
                     "messages": {"content": "你好 world", "attachments": []}, "intent": "helpdesk"}
    parse_upstream(event)  # a valid 1001 for the router


def test_image_message_attachment() -> None:
    msg = parse_message(message("image", "<PicUrl><![CDATA[http://p/1.jpg]]></PicUrl>"
                                         "<MediaId><![CDATA[media_1]]></MediaId>"))
    inbound = to_inbound("hr", "corp", msg)
    assert inbound is not None
    assert inbound.messages() == {"content": "", "attachments": [
        {"type": "image", "file_id": "media_1", "option": {"url": "http://p/1.jpg"}}]}
    parse_upstream(inbound.event())


def test_voice_message_attachment() -> None:
    msg = parse_message(message("voice", "<MediaId><![CDATA[v1]]></MediaId><Format><![CDATA[amr]]></Format>"))
    inbound = to_inbound("hr", "corp", msg)
    assert inbound is not None
    assert list(inbound.attachments) == [{"type": "voice", "file_id": "v1", "option": {"format": "amr"}}]


def test_file_message_attachment() -> None:
    msg = parse_message(message("file", "<MediaId><![CDATA[f1]]></MediaId><FileName><![CDATA[报告.pdf]]></FileName>"))
    inbound = to_inbound("hr", "corp", msg)
    assert inbound is not None
    assert list(inbound.attachments) == [{"type": "file", "name": "报告.pdf", "file_id": "f1"}]


def test_events_and_other_types_are_not_routed() -> None:
    assert to_inbound("hr", "corp", parse_message(message("event", "<Event>enter_agent</Event>", None))) is None
    assert to_inbound("hr", "corp", parse_message(message("location", "<Label>x</Label>"))) is None


def test_dedupe_key_without_msg_id_is_sender_and_time() -> None:
    msg = parse_message(message("event", "<Event>enter_agent</Event>", None))
    assert dedupe_key(msg) == "from:zhangsan:1348831860:enter_agent"


def test_odd_user_ids_are_hashed_into_a_valid_dialog() -> None:
    body = message("text", "<Content>x</Content>").replace(b"zhangsan", "张 三:x".encode())
    inbound = to_inbound("hr", "corp", parse_message(body))
    assert inbound is not None and inbound.dialog_id.startswith("wecom:hr:h")
    parse_upstream(inbound.event())


def test_message_without_msgtype_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse_message(b"<xml><FromUserName>a</FromUserName></xml>")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda a, b: f"<xml><{a}>{b}</{a}></xml>".encode(),
                           st.text(alphabet="ABCxyz_!&;<>", min_size=0, max_size=5), st.text(max_size=30)),
                 st.builds(lambda s: b"<!DOCTYPE " + s, st.binary(max_size=100))))
def test_fuzz_only_rejections_with_a_status(body: bytes) -> None:
    try:
        parse_envelope(body)
    except CallbackRejected as e:
        assert e.status in (400, 413)
