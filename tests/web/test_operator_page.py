"""``GET /operator``, the operator console (docs/operators.md), through
treq.testing.StubTreq on a FakeRouter: served with the chat page's headers,
only its own files, nothing inline that the strict CSP would block."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from treq.testing import StubTreq

from twisted.internet.task import Clock

from libchat.doors.web import app as web
from libchat.testing import FakeRouter

CONSOLE_FILES = ["operator.html", "operator.js", "opmodel.js", "operator.css"]


def stub() -> StubTreq:
    return StubTreq(web.build(FakeRouter(), Clock(), web.WebSettings()).resource())


def get(client: StubTreq, path: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """(status, raw headers, body) of one GET, once the stub has run it."""
    got: list[Any] = []
    client.get("http://libchat" + path).addBoth(got.append)
    client.flush()
    response = got[0]
    body: list[Any] = []
    response.content().addBoth(body.append)
    client.flush()
    return response.code, dict(response.headers.getAllRawHeaders()), body[0]


def page_headers(headers: dict[bytes, list[bytes]]) -> dict[bytes, list[bytes]]:
    return {k: v for k, v in headers.items() if k in web.PAGE_HEADERS}


class Page(HTMLParser):
    """What a page loads, and anything inline a strict CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline: list[str] = []
        self.ids: set[str] = set()
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}>")
        if tag == "script":
            if a.get("src"):
                self.scripts.append(a["src"] or "")
            self._in = "script"
        elif tag == "style":
            self.inline.append("<style>")
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline.append("<script> with a body")


def test_operator_page_is_served_with_the_chat_pages_headers() -> None:
    client = stub()
    status, headers, body = get(client, "/operator")
    assert status == 200
    assert headers[b"Content-Type"] == [b"text/html; charset=utf-8"]
    assert page_headers(headers) == {k: [v] for k, v in web.PAGE_HEADERS.items()}
    assert b"default-src 'self'" in headers[b"Content-Security-Policy"][0]
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]
    _, chat_headers, _ = get(client, "/")
    assert page_headers(headers) == page_headers(chat_headers)
    assert b"operator console" in body


def test_operator_page_loads_only_its_own_files_and_nothing_inline() -> None:
    client = stub()
    _, _, body = get(client, "/operator")
    page = Page()
    page.feed(body.decode())
    assert page.inline == []
    assert page.scripts == ["/static/render.js", "/static/socket.js", "/static/opmodel.js",
                            "/static/operator.js"]
    assert page.styles == ["/static/style.css", "/static/operator.css"]
    # the ids the tests and operator.js rely on
    assert {"queue", "dialogs", "transcript", "reply", "done", "status", "notices",
            "login-user", "login-token"} <= page.ids
    for path in page.scripts + page.styles:
        status, headers, _ = get(client, path)
        assert status == 200, path
        assert page_headers(headers) == {k: [v] for k, v in web.PAGE_HEADERS.items()}, path


def test_console_files_have_their_types_and_headers() -> None:
    client = stub()
    kinds = {".html": b"text/html", ".js": b"text/javascript", ".css": b"text/css"}
    for name in CONSOLE_FILES:
        status, headers, body = get(client, f"/static/{name}")
        assert status == 200, name
        assert headers[b"Content-Type"][0].startswith(kinds[name[name.rindex("."):]]), name
        assert headers[b"X-Content-Type-Options"] == [b"nosniff"], name
        assert body, name


def test_unknown_names_are_404() -> None:
    client = stub()
    for path in ["/operator/", "/operator/x", "/operator.html", "/static/operator.jsx",
                 "/static/nope.js", "/static/..%2Foperator.html", "/operators"]:
        status, headers, body = get(client, path)
        assert status == 404, path
        assert b"NOT_FOUND" in body, path
    status, _, _ = get(client, "/operator?role=operator")  # a query string is no new name
    assert status == 200
