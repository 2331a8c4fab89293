"""Event validation (docs/protocol.md §1, docs/protocol.md §2-3): each bad input, its answer."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from libchat.protocol import codes
from libchat.protocol.events import BadEvent, parse_program, parse_upstream

from .helpers import each_case
from .logcheck import LogCheckMixin


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def msg(**over: object) -> dict:
    event = {"event_type": 1001, "dialog_id": "d1", "user_id": "u1",
             "messages": {"content": "hi"}}
    event.update(over)
    return event


def code_of(header: int, raw: bytes) -> str:
    try:
        parse_upstream(header, raw)
    except BadEvent as e:
        return e.code
    raise AssertionError(f"parse_upstream({header}, {raw!r}) raised no BadEvent")


NON_OBJECT_BODIES = [b"not json", b"[1,2]", b"\xff\xfe", b"", b"null", b'"s"']

MISSING_OR_WRONG_FIELDS = [
    {k: v for k, v in msg().items() if k != "dialog_id"},
    {k: v for k, v in msg().items() if k != "user_id"},
    {k: v for k, v in msg().items() if k != "event_type"},
    msg(messages={}), msg(messages={"content": 5}), msg(messages="hi"),
    msg(messages={"content": "x", "attachments": "no"}),
    msg(user_id=""), msg(user_id="u" * 257), msg(user_id=7),
    msg(message_id=5), msg(message_id=""),
    msg(event_type=True),
]


def event_id(e: dict) -> str:
    return ",".join(sorted(str(k) for k in e)) + ":" + str(e.get("messages"))[:20]


HOSTILE_DIALOG_IDS = ["../etc/passwd", "..", ".hidden", "a/b", "", "a b",
                      "x" * 129, "-lead", "a\0b", "ü"]

BAD_INTENTS = ["../x", "Echo", "", "a" * 65, "_x", 3]

NOT_FROM_UPSTREAM = [2001, 2002, 2003, 2004, 3000, 1003, 9999]

BAD_PROGRAM_EVENTS = [
    (body(event_type=1001, dialog_id="d", user_id="u", messages={"content": "x"}),
     codes.UNKNOWN_EVENT),
    (body(event_type=2001), codes.BAD_REQUEST),
    (b"{", codes.BAD_REQUEST),
]


class EventTests(LogCheckMixin, SynchronousTestCase):
    def test_valid_message_gets_defaults(self) -> None:
        event = parse_upstream(1001, json.dumps(msg()).encode())
        assert event["message_id"].startswith("msg-")
        assert event["messages"] == {"content": "hi", "attachments": []}

    def test_a_known_dialog_gets_the_same_answers_as_a_new_one(self) -> None:
        """The one-pass check of a plain 1001 (dialog id seen before) gives
        what the full validation gives, for good and bad bodies alike."""
        from libchat.protocol.events import check_upstream, decode_body
        good = msg(dialog_id="seen-1", message_id="m1",
                   messages={"content": "hi", "attachments": [{"k": 1}]})
        raw = json.dumps(good).encode()
        first = parse_upstream(1001, raw)  # the dialog id becomes known
        assert parse_upstream(1001, raw) == first == check_upstream(decode_body(1001, raw))
        assert list(first) == ["event_type", "dialog_id", "user_id", "message_id", "messages"]
        for bad in MISSING_OR_WRONG_FIELDS:
            bad = dict(bad, dialog_id="seen-1") if "dialog_id" in bad else bad
            for _ in range(2):
                raw = json.dumps(bad).encode()
                assert code_of(1001, raw) == codes.BAD_REQUEST, bad

    def test_unknown_fields_are_not_forwarded(self) -> None:
        event = parse_upstream(1001, json.dumps(msg(evil="x", intent="echo")).encode())
        assert "evil" not in event and event["intent"] == "echo"

    def test_non_object_bodies_are_bad_request(self) -> None:
        def check(raw: bytes) -> None:
            assert code_of(1001, raw) == codes.BAD_REQUEST

        each_case(self, NON_OBJECT_BODIES, check)

    def test_missing_or_wrong_fields_are_bad_request(self) -> None:
        def check(event: dict) -> None:
            assert code_of(1001, json.dumps(event).encode()) == codes.BAD_REQUEST

        each_case(self, MISSING_OR_WRONG_FIELDS, check, name=event_id)

    def test_hostile_dialog_ids_are_bad_request(self) -> None:
        def check(dialog_id: str) -> None:
            assert code_of(1001, json.dumps(msg(dialog_id=dialog_id)).encode()) == codes.BAD_REQUEST

        each_case(self, HOSTILE_DIALOG_IDS, check)

    def test_longest_dialog_id_is_fine(self) -> None:
        parse_upstream(1001, json.dumps(msg(dialog_id="a" * 128)).encode())

    def test_bad_intents_are_bad_request(self) -> None:
        def check(intent: object) -> None:
            assert code_of(1001, json.dumps(msg(intent=intent)).encode()) == codes.BAD_REQUEST

        each_case(self, BAD_INTENTS, check)

    def test_header_type_must_equal_event_type(self) -> None:
        error = self.assertRaises(BadEvent, parse_upstream, 1002,
                                  json.dumps(msg(message_id="m1")).encode())
        assert error.code == codes.BAD_REQUEST
        assert (error.dialog_id, error.message_id) == ("d1", "m1")

    def test_events_upstream_may_not_send_are_unknown_event(self) -> None:
        def check(etype: int) -> None:
            assert code_of(etype, json.dumps(msg(event_type=etype)).encode()) == codes.UNKNOWN_EVENT

        each_case(self, NOT_FROM_UPSTREAM, check)

    def test_close_needs_only_ids(self) -> None:
        assert parse_upstream(1002, body(event_type=1002, dialog_id="d", user_id="u")) == {
            "event_type": 1002, "dialog_id": "d", "user_id": "u"}

    def test_program_events_need_only_event_type(self) -> None:
        assert parse_program(2002, body(event_type=2002))["event_type"] == 2002
        reply = parse_program(2001, body(event_type=2001, messages={"content": "x"}))
        assert reply["messages"] == {"content": "x", "attachments": []}

    def test_bad_program_events(self) -> None:
        def check(case: tuple[bytes, str]) -> None:
            raw, code = case
            error = self.assertRaises(BadEvent, parse_program,
                                      json.loads(raw)["event_type"] if raw != b"{" else 2001, raw)
            assert error.code == code

        each_case(self, BAD_PROGRAM_EVENTS, check)
