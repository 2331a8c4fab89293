"""Dialog and user ids of section 10, always valid for section 3."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms import ids
from libchat.protocol.events import DIALOG_ID


def test_plain_ids_keep_their_parts() -> None:
    assert ids.wecom_dialog("hr", "zhangsan") == "wecom:hr:zhangsan"
    assert ids.wecom_user("ww123", "zhangsan") == "wecom:ww123:zhangsan"
    assert ids.lark_dialog("bot", "ou_abc") == "lark:bot:ou_abc"
    assert ids.lark_dialog("bot", "ou_abc", "oc_def") == "lark:bot:oc_def:ou_abc"
    assert ids.lark_user("ou_abc") == "lark:ou_abc"


def test_a_part_that_does_not_fit_is_h_and_32_hex_of_its_sha1() -> None:
    assert ids.safe_part("张三") == "h" + __import__("hashlib").sha1("张三".encode()).hexdigest()[:32]
    assert ids.safe_part("a:b") != "a:b"  # a colon would make ids ambiguous
    assert ids.safe_part("-x").startswith("h")


@settings(deadline=None)
@given(st.text(max_size=80), st.text(max_size=200), st.text(max_size=200))
def test_any_parts_give_a_valid_deterministic_dialog_id(app: str, a: str, b: str) -> None:
    for dialog in (ids.wecom_dialog(app, a), ids.lark_dialog(app, a, b), ids.lark_dialog(app, a)):
        assert DIALOG_ID.fullmatch(dialog), dialog
    assert ids.lark_dialog(app, a, b) == ids.lark_dialog(app, a, b)
    assert 1 <= len(ids.lark_user(a)) <= 256


@settings(deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_different_senders_never_share_a_dialog(a: str, b: str) -> None:
    if a != b:
        assert ids.wecom_dialog("hr", a) != ids.wecom_dialog("hr", b)
