"""Ids that become file names (dialog ids, program names) cannot escape
their directories, whichever way they arrive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libchat.protocol.events import valid_dialog_id
from libchat.storage.journal import encode_line
from libchat.storage.store import JsonFileStore
from libchat.protocol.wire import encode_event

from .world import World, frames, user_message

EVIL = ["../x", "..", "a/b", "/etc/passwd", ".hidden", "a\\b", "a\x00b", "", "x" * 129,
        "..%2fx", "a\nb", "ümlaut"]


@pytest.mark.parametrize("dialog_id", EVIL)
def test_unsafe_dialog_ids_are_refused_at_the_door(tmp_path: Path, dialog_id: str) -> None:
    store = JsonFileStore(tmp_path / "data")
    store.load()
    w = World(tmp_path, store=store)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message(dialog_id=dialog_id)))
    (answer,) = frames(transport)
    assert (answer["event_type"], answer["code"]) == (2004, "BAD_REQUEST")
    assert not transport.disconnecting
    store.flush()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()
                  and ".journal" not in p.parts) == ["echo.js", "package.json"]
    assert not valid_dialog_id(dialog_id)
    with pytest.raises(ValueError):
        store.path_for(dialog_id)


@pytest.mark.parametrize("intent", ["../echo", "echo/..", "ECHO", ".", "a" * 65])
def test_unsafe_intents_are_refused(tmp_path: Path, intent: str) -> None:
    w = World(tmp_path)
    proto, transport = w.connect()
    proto.dataReceived(encode_event(user_message(intent=intent)))
    (answer,) = frames(transport)
    assert (answer["event_type"], answer["code"]) == (2004, "BAD_REQUEST")
    assert w.runtime.started == []


def test_program_names_are_only_looked_up_never_joined(tmp_path: Path) -> None:
    w = World(tmp_path)
    (tmp_path / "programs" / "Bad Name").mkdir()
    (tmp_path / "programs" / "Bad Name" / "Bad Name.js").write_text("")
    w.library.scan()
    assert set(w.library.programs()) == {"echo"}
    assert w.library.get("..") is None and w.library.get("../programs/echo") is None


def test_a_forged_journal_entry_cannot_write_outside_the_data_dir(
        tmp_path: Path, logged: Any) -> None:
    logged.allow("skipping a bad journal entry")
    data = tmp_path / "data"
    (data / ".journal").mkdir(parents=True)
    header = {"user_id": "u", "created_at": 0, "updated_at": 0, "program": None,
              "state": "open", "channel": "frame", "seq": 0}
    (data / ".journal" / "00000001.log").write_bytes(
        encode_line({"t": "rec", "d": "../escaped", "h": header, "m": []}))
    store = JsonFileStore(data)
    assert store.load() == []
    store.flush()
    assert not (tmp_path / "escaped.json").exists()
