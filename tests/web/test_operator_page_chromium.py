"""The operator console (``GET /operator``) in real headless Chromium (Debian's),
against a real ``twistd`` with the bundled programs (``programs/human`` is the
operators program), next to the chat page in another browser context.

Driven with Playwright's Python API; never ``playwright install``: the browser
is ``/usr/bin/chromium``. Screenshots land in ``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libchat.doors.web.auth import mint

from ..helpers import ROOT
from ..launcher import Libchat
from .conftest import ARTIFACTS, CHROMIUM, SECRET, TIMEOUT_MS, Server, rest

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed at /usr/bin/chromium "
                                       "(apt-get install chromium)")


class Pages:
    """Opens pages, each in a browser context of its own (its own localStorage:
    one person each), and collects what they log as errors (a CSP violation
    is one) but what a test says it expects."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def __call__(self, **options: Any) -> Any:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800}, **options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        return page

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Pages]:
    pages = Pages(browser)
    try:
        yield pages
    finally:
        for context in pages.contexts:
            context.close()
    assert not pages.unexpected(), f"a page logged errors: {pages.unexpected()}"


def operator_console(page: Any, server: Libchat, operator: str) -> Any:
    page.goto(server.url("/operator"))
    page.fill("#login-user", operator)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")
    page.wait_for_function("window.opconsole.model.snapshotSeen")  # the 3100 came
    return page


def chat_page(page: Any, server: Libchat, user: str) -> Any:
    page.goto(server.url("/"))
    page.fill("#login-user", user)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")
    return page


def say(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def select_first(console: Any) -> None:
    """Wait for the first dialog in "my dialogs" (its 3101) and open it."""
    item = console.locator("#dialogs li[data-dialog]").first
    item.wait_for()
    item.click()


def answer(console: Any, text: str) -> None:
    console.fill("#reply", text)
    console.keyboard.press("Enter")


def entries(console: Any) -> list[str]:
    """The selected transcript's bubbles, in order."""
    return console.locator("#transcript .entry .bubble").all_inner_texts()


def seqs(console: Any) -> list[int]:
    return [int(s) for s in console.locator("#transcript .entry[data-seq]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.seq)")]


def recorded(server: Libchat, user: str, dialog_id: str, content: str,
             timeout: float = 15.0) -> dict[str, Any]:
    """The entry with ``content`` once it is in the dialog's transcript on the
    server, read over REST as its user (long polls, bounded)."""
    deadline, after, seen = time.monotonic() + timeout, 0, []
    while time.monotonic() < deadline:
        got = rest(server, "GET", f"/api/chat/sessions/{dialog_id}/messages?after={after}"
                   "&wait=2", user)["messages"]
        seen += got
        for entry in got:
            if (entry.get("messages") or {}).get("content") == content:
                return entry
            after = max(after, entry["seq"])
    raise AssertionError(f"{content!r} never recorded in {dialog_id}: {seen}")


def test_operator_takes_a_users_dialog_answers_and_closes_it(
        open_page: Pages, dev_server: Server) -> None:
    console = operator_console(open_page(), dev_server, "olga")
    assert console.locator("#me-name").inner_text() == "olga"
    assert console.locator("#dialogs li").count() == 0
    user = chat_page(open_page(), dev_server, "ada-wants-a-human")

    say(user, "人工")
    item = console.locator("#dialogs li[data-dialog]").first
    item.wait_for()  # 3101: the dialog is mine
    dialog_id = user.evaluate("window.libchat.state.current")
    assert item.get_attribute("data-dialog") == dialog_id
    assert "ada-wants-a-human" in item.inner_text()
    assert item.locator(".unread").inner_text() == "1"  # the user waits for an answer

    item.click()
    assert item.locator(".unread").count() == 0  # selecting clears
    console.locator("#transcript .entry.user", has_text="人工").wait_for()
    assert "ada-wants-a-human" in console.locator("#title").inner_text()
    assert console.locator("#dialog-program").inner_text() == "● human"

    answer(console, "你好, I am Olga. How can I help?")
    mine = console.locator("#transcript .entry.operator").first
    mine.wait_for()  # the server's 2001 came back, with its seq
    assert mine.locator(".chip").inner_text() == "you"
    reply = user.locator(".msg.reply", has_text="你好, I am Olga. How can I help?")
    reply.wait_for()
    assert console.locator("#reply").input_value() == ""

    say(user, "my parcel is late")
    console.locator("#transcript .entry.user", has_text="my parcel is late").wait_for()
    assert entries(console) == ["人工", "你好, I am Olga. How can I help?", "my parcel is late"]
    assert seqs(console) == sorted(set(seqs(console)))  # in order, each once
    assert item.locator(".unread").count() == 0  # selected: nothing is unread

    ARTIFACTS.mkdir(exist_ok=True)
    console.screenshot(path=str(ARTIFACTS / "operator.png"), animations="disabled")
    console.click("#done")
    user.locator(".notice.ended.completed").wait_for()  # 2002 completed
    assert user.locator("#dialog-state").inner_text() == "ended"
    assert console.locator("#dialog-state").inner_text() == "done"
    assert console.locator(f"#dialogs li[data-dialog='{dialog_id}']").get_attribute(
        "data-state") == "ended"
    assert console.locator("#reply").is_disabled()
    console.screenshot(path=str(ARTIFACTS / "operator-done.png"), animations="disabled")
    console.click("#done")  # now "Remove": the finished dialog leaves the list
    console.locator("#dialogs li").first.wait_for(state="detached")


def test_unread_counts_for_a_dialog_that_is_not_selected(
        open_page: Pages, dev_server: Server) -> None:
    console = operator_console(open_page(color_scheme="dark"), dev_server, "omar")
    first = chat_page(open_page(), dev_server, "bea-first")
    second = chat_page(open_page(), dev_server, "cy-second")
    say(first, "I want a human")
    console.locator("#dialogs li[data-dialog]").first.wait_for()
    console.locator("#dialogs li[data-dialog]").first.click()
    say(second, "客服")
    other = console.locator("#dialogs li[data-dialog]", has_text="cy-second")
    other.locator(".unread", has_text="1").wait_for()
    say(second, "<b>hello?</b><img src=x>")  # text, never markup
    say(second, "anyone there?")
    other.locator(".unread", has_text="3").wait_for()
    assert console.locator("#dialogs li.active").inner_text().startswith("bea-first")
    assert console.title().startswith("(3) ")
    console.screenshot(path=str(ARTIFACTS / "operator-dark.png"), animations="disabled")
    other.click()
    assert other.locator(".unread").count() == 0
    console.locator("#transcript .entry.user", has_text="anyone there?").wait_for()
    assert entries(console) == ["客服", "<b>hello?</b><img src=x>", "anyone there?"]
    assert console.locator("#transcript b, #transcript img, #dialogs b").count() == 0
    # the user leaves: the dialog is marked closed (1002 forwarded)
    second.click("#close-dialog")
    console.locator("#transcript .entry.note.closed").wait_for()
    assert other.get_attribute("data-state") == "closed"
    assert console.locator("#dialog-state").inner_text() == "user left"
    first.click("#close-dialog")  # leave nothing assigned for the next test
    console.locator("#dialogs li[data-state=closed]", has_text="bea-first").wait_for()


def test_console_reconnects_and_replays_what_it_missed(
        open_page: Pages, dev_server: Server) -> None:
    console = operator_console(open_page(), dev_server, "oscar")
    user = chat_page(open_page(), dev_server, "dee-reconnects")
    say(user, "人工")
    select_first(console)
    console.locator("#transcript .entry.user", has_text="人工").wait_for()
    dialog_id = user.evaluate("window.libchat.state.current")

    # a dropped socket: reconnecting (back-off), then online again
    console.evaluate("window.opconsole.drop()")
    console.wait_for_selector("#status[data-state=reconnecting]")
    console.wait_for_selector("#status[data-state=online]")

    # held down while the user writes; then back, with what was missed, once
    console.evaluate("window.opconsole.pause()")
    console.wait_for_selector("#status[data-state=offline]")
    say(user, "are you still there?")
    recorded(dev_server, "dee-reconnects", dialog_id, "are you still there?")
    say(user, "hello again")
    recorded(dev_server, "dee-reconnects", dialog_id, "hello again")
    assert entries(console) == ["人工"]
    console.evaluate("window.opconsole.resume()")
    console.wait_for_selector("#status[data-state=online]")
    console.locator("#transcript .entry.user", has_text="hello again").wait_for()
    # the 3101 on reconnect and the 1003 replay overlap: the model merges by seq
    last = recorded(dev_server, "dee-reconnects", dialog_id, "hello again")["seq"]
    console.wait_for_function(  # the replay's own 1001 frame came (nothing live while paused)
        "([id, seq]) => window.opconsole.heard.some(h => h.event_type === 1001 "
        "&& h.dialog_id === id && h.seq === seq)", arg=[dialog_id, last])
    assert console.evaluate("window.opconsole.model.snapshotSeen")
    assert entries(console) == ["人工", "are you still there?", "hello again"]
    assert seqs(console) == sorted(set(seqs(console)))
    sent = console.evaluate("window.opconsole.model.replay()")
    assert sent == [{"event_type": 1003, "dialog_id": dialog_id,
                     "after": max(seqs(console))}]

    answer(console, "still here")
    user.locator(".msg.reply", has_text="still here").wait_for()
    console.click("#done")
    user.locator(".notice.ended.completed").wait_for()


def test_queue_shows_who_waits_and_empties_when_a_dialog_is_taken(
        open_page: Pages, dev_server: Server) -> None:
    """programs/human has max_per_operator 5: a sixth user waits in the queue
    (3104) until the operator is done with one of the five."""
    console = operator_console(open_page(), dev_server, "quinn")
    users = [f"queue-user-{i}" for i in range(6)]
    sessions = []
    for user in users:
        session = rest(dev_server, "POST", "/api/chat/sessions", user, {})["session_id"]
        rest(dev_server, "POST", f"/api/chat/sessions/{session}/messages", user,
             {"content": "人工"})
        sessions.append(session)
    waiting = console.locator(f"#queue li[data-dialog='{sessions[5]}']")
    waiting.wait_for()
    assert users[5] in waiting.inner_text()
    assert "human" in waiting.inner_text()
    assert console.locator("#queue-count").inner_text() == "1"
    console.wait_for_function("document.querySelectorAll('#dialogs li[data-dialog]').length === 5")
    told = recorded(dev_server, users[5], sessions[5],
                    "All operators are busy. You are number 1 in the queue.")
    assert (told["status"], told["place"]) == ("queued", 1)
    console.screenshot(path=str(ARTIFACTS / "operator-queue.png"), animations="disabled")

    console.click(f"#dialogs li[data-dialog='{sessions[0]}']")
    console.click("#done")
    waiting.wait_for(state="detached")  # 3104: the queue is empty again
    assert console.locator("#queue-empty").is_visible()
    console.locator(f"#dialogs li[data-dialog='{sessions[5]}'] .unread").wait_for()  # 3101
    for user, session in zip(users[1:], sessions[1:]):
        rest(dev_server, "POST", f"/api/chat/sessions/{session}/close", user)
    for session in sessions[1:]:
        console.locator(f"#dialogs li[data-dialog='{session}'][data-state=closed]").wait_for()


def test_console_in_jwt_mode_signs_in_with_an_operator_token(
        open_page: Pages, jwt_server: Server) -> None:
    console = open_page()
    console.goto(jwt_server.url("/operator"))
    console.locator("#login-token").wait_for()
    assert console.locator("#login-user").is_hidden()
    console.fill("#login-token", mint(SECRET.encode(), "tara", role="operator"))
    console.click("#login-form button[type=submit]")
    console.wait_for_selector("#status[data-state=online]")
    console.wait_for_function("window.opconsole.model.snapshotSeen")  # 3100: an operator
    assert console.evaluate("window.opconsole.model.operatorId") == "tara"
    assert console.locator("#me-name").inner_text() == "tara"
    assert console.locator("#notices .op-notice").count() == 0


def test_console_says_so_when_the_token_is_not_an_operators(
        open_page: Pages, jwt_server: Server) -> None:
    console = open_page()
    console.goto(jwt_server.url("/operator"))
    console.fill("#login-token", mint(SECRET.encode(), "plain-user"))  # no "role"
    console.click("#login-form button[type=submit]")
    console.wait_for_selector("#status[data-state=online]")  # a user socket: accepted
    notice = console.locator("#notices .op-notice.error")
    notice.wait_for()  # no 3100 within 5 s
    assert '"role": "operator"' in notice.inner_text()
    assert not console.evaluate("window.opconsole.model.snapshotSeen")


def free_port() -> int:
    """A loopback port nobody listens on now (the restarted server needs the
    same one: the page reconnects to the address it was loaded from)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_console_survives_a_server_restart(open_page: Pages, tmp_path: Path) -> None:
    """The assignment is journaled: after a restart the console reconnects by
    itself (back-off), holds the same dialog, and replays what it missed."""
    lc = Libchat(tmp_path / "lc", "--web", f"tcp:{free_port()}:interface=127.0.0.1", cwd=ROOT)
    # while the server is down, Chromium logs each refused reconnection attempt
    open_page.expect(r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws\?[^']*' failed: "
                     r"Error in connection establishment: net::ERR_CONNECTION_REFUSED$")
    try:
        lc.start(30)
        console = operator_console(open_page(), lc, "rita")
        user = chat_page(open_page(), lc, "eve-restarts")
        say(user, "人工")
        select_first(console)
        answer(console, "before the restart")
        user.locator(".msg.reply", has_text="before the restart").wait_for()
        dialog_id = user.evaluate("window.libchat.state.current")

        console.evaluate("window.opconsole.pause()")
        console.wait_for_selector("#status[data-state=offline]")
        say(user, "did you get this?")
        recorded(lc, "eve-restarts", dialog_id, "did you get this?")
        lc.stop()
        console.evaluate("window.opconsole.resume()")
        console.wait_for_selector("#status[data-state=reconnecting]")
        lc.restart(30)
        console.wait_for_selector("#status[data-state=online]", timeout=40_000)
        console.wait_for_function("window.opconsole.model.snapshotSeen", timeout=40_000)
        console.locator("#transcript .entry.user", has_text="did you get this?").wait_for()
        assert entries(console) == ["人工", "before the restart", "did you get this?"]
        assert seqs(console) == sorted(set(seqs(console)))
        assert console.locator(f"#dialogs li[data-dialog='{dialog_id}']").get_attribute(
            "data-state") == "open"
        assert console.locator("#notices .op-notice").count() == 0  # nothing was lost

        answer(console, "after the restart")
        user.locator(".msg.reply", has_text="after the restart").wait_for(timeout=40_000)
        console.click("#done")
        user.locator(".notice.ended.completed").wait_for(timeout=40_000)
    finally:
        lc.close()
    bad = lc.bad_lines()
    assert not bad, "the server logged errors:\n" + "\n".join(bad)
