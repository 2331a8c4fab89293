"""``/api/openapi.json`` holds against the live REST API (a real ``twistd``).

Two checks: schemathesis fuzzes every operation (bounded to a few seconds),
and a real session's every response is validated against the document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_twisted
import treq
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from libchat.doors.web.app import OPENAPI
from libchat.doors.web.auth import mint

from ..helpers import ROOT
from .conftest import SECRET, Server, start_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[Server]:
    yield from start_server(tmp_path_factory, "--auth-secret", SECRET)


def _draft4(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema draft 4 has it."""
    if isinstance(node, dict):
        out = {k: _draft4(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_draft4(v) for v in node]
    return node


DOC = json.loads(OPENAPI.read_text())
REGISTRY = Registry().with_resource("urn:libchat", Resource(_draft4(DOC), DRAFT4))


def check(path: str, method: str, status: int, body: Any) -> None:
    """``body`` matches the document's schema for this operation and status."""
    responses = DOC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} answered undocumented {status}"
    response = responses[str(status)]
    pointer = "/".join(["#/paths", path.replace("/", "~1"), method, "responses", str(status),
                        "content", "application~1json", "schema"])
    if "$ref" in response:
        pointer = response["$ref"] + "/content/application~1json/schema"
    validator = jsonschema.Draft4Validator({"$ref": "urn:libchat" + pointer}, registry=REGISTRY)
    validator.validate(body)


@pytest_twisted.inlineCallbacks
def test_a_real_sessions_responses_match_the_document(server: Server) -> Any:
    headers = {"Authorization": f"Bearer {mint(SECRET.encode(), 'olga')}"}

    def call(method: str, template: str, path: str, **kw: Any) -> Any:
        d = treq.request(method.upper(), server.url(path), headers=headers, **kw)

        def checked(response: Any) -> Any:
            def got(body: Any) -> Any:
                check(template, method, response.code, body)
                return response.code, body
            return response.json().addCallback(got)
        return d.addCallback(checked)

    sessions = "/api/chat/sessions"
    messages = "/api/chat/sessions/{session_id}/messages"
    status, session = yield call("post", sessions, sessions, json={"intent": "countdown"})
    assert status == 201
    path = f"{sessions}/{session['session_id']}"
    status, _ = yield call("post", messages, path + "/messages",
                                json={"content": "countdown 1", "attachments": [{"a": 1}]})
    assert status == 202
    entries: list[dict[str, Any]] = []
    while not any(e["messages"]["content"] == "liftoff!" for e in entries):
        status, got = yield call("get", messages, path + "/messages",
                                 params={"after": str(entries[-1]["seq"] if entries else 0),
                                         "wait": "10"})
        entries += got["messages"]
    # every kind of entry was checked: 1001, 2001, background 2001, 2002 with reason
    assert {e["event_type"] for e in entries} == {1001, 2001, 2002}
    assert any(e.get("background") for e in entries) and any("reason" in e for e in entries)
    status, _ = yield call("post", "/api/chat/sessions/{session_id}/close", path + "/close")
    assert status == 200
    for method, template, url, kw in [
            ("get", messages, f"{sessions}/nope/messages", {}),
            ("get", messages, path + "/messages", {"params": {"after": "x"}}),
            ("post", messages, path + "/messages", {"json": {"content": 1}}),
            ("post", sessions, sessions, {"json": {"intent": "No!"}})]:
        status, _ = yield call(method, template, url, **kw)
        assert status in (400, 404)


def test_schemathesis_finds_no_difference_between_document_and_server(server: Server,
                                                                        tmp_path: Path) -> None:
    token = mint(SECRET.encode(), "fuzz")
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.web.schemathesis_hooks",
               PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", server.url("/api/openapi.json"),
         "-H", f"Authorization: Bearer {token}", "--checks", "all",
         "--max-examples", "10", "--seed", "1", "--generation-database", "none",
         "--request-timeout", "5", "--no-color"],
        check=False, cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=240)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "4 selected / 4 total" in result.stdout
