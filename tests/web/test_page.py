"""The web chat page in real headless Chromium (Debian's), against a real ``twistd``.

Driven with Playwright's Python API; never ``playwright install``: the browser
is ``/usr/bin/chromium``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from libchat.doors.web.auth import mint

from .conftest import ARTIFACTS, CHROMIUM, SECRET, TIMEOUT_MS, Server, rest

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed at /usr/bin/chromium "
                                       "(apt-get install chromium)")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page logged errors: {errors}"


def sign_in(page: Any, server: Server, user: str) -> None:
    page.goto(server.url("/"))
    page.fill("#login-user", user)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")


def say(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def test_chat_with_hello_in_the_page_until_the_dialog_ends(page: Any, dev_server: Server) -> None:
    sign_in(page, dev_server, "ada-in-chromium")
    say(page, "hello")
    reply = page.locator(".msg.reply").first
    reply.wait_for()
    assert reply.locator(".bubble").inner_text() == "Hello! What's your name?"
    assert reply.locator(".chip").first.inner_text() == "hello"  # which program answers
    assert page.locator("#program").inner_text() == "● hello"
    say(page, "Ada")
    page.locator(".notice.ended.completed").wait_for()
    assert "Nice to meet you, Ada!" in page.locator(".msg.reply").nth(1).inner_text()
    assert page.locator("#dialog-state").inner_text() == "ended"
    # background replies are marked as such
    say(page, "countdown 2")
    page.locator(".msg.reply.background").nth(2).wait_for()
    background = page.locator(".msg.reply.background").all_inner_texts()
    assert [t.split("\n")[-1] for t in background] == ["2", "1", "liftoff!"]
    assert all("background" in t for t in background)
    # "not supported" is said clearly
    say(page, "zzz qqq nothing matches this")
    notice = page.locator(".notice.unsupported")
    notice.wait_for()
    assert "Not supported" in notice.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), animations="disabled")
    # and the person can close it
    page.click("#close-dialog")
    page.locator(".notice.closed").wait_for()
    assert page.locator("#dialog-state").inner_text() == "closed"
    page.screenshot(path=str(ARTIFACTS / "chat-closed.png"), animations="disabled")


def test_page_reconnects_and_replays_what_it_missed(page: Any, dev_server: Server) -> None:
    user = "replay-in-chromium"
    sign_in(page, dev_server, user)
    say(page, "echo first")
    page.locator(".msg.reply").first.wait_for()
    dialog_id = page.evaluate("window.libchat.state.current")
    page.evaluate("window.libchat.pause()")
    page.wait_for_selector("#status[data-state=offline]")
    # while the page is away, the same user writes into the dialog over REST
    posted = rest(dev_server, "POST", f"/api/chat/sessions/{dialog_id}/messages", user,
                  {"content": "echo while you were away"})
    got = rest(dev_server, "GET", f"/api/chat/sessions/{dialog_id}/messages"
               f"?after={posted['seq']}&wait=20", user)
    assert got["messages"][0]["messages"]["content"] == "echo: echo while you were away"
    assert page.locator(".msg").count() == 2  # the page has not seen it
    page.evaluate("window.libchat.resume()")
    page.locator(".msg.reply", has_text="echo: echo while you were away").wait_for()
    texts = [t.split("\n")[-1] for t in page.locator(".msg").all_inner_texts()]
    assert texts == ["echo first", "echo: echo first", "echo while you were away",
                     "echo: echo while you were away"]
    # a reload rebuilds the conversation from the server's transcript
    page.reload()
    page.locator(".msg.reply", has_text="echo: echo while you were away").wait_for()
    assert [t.split("\n")[-1] for t in page.locator(".msg").all_inner_texts()] == texts


def test_page_in_jwt_mode_asks_for_a_token(page: Any, jwt_server: Server) -> None:
    page.goto(jwt_server.url("/"))
    page.locator("#login-token").wait_for()
    assert page.locator("#login-user").is_hidden()
    page.fill("#login-token", mint(SECRET.encode(), "tina"))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")
    assert page.locator("#me-name").inner_text() == "tina"
    say(page, "echo signed")
    page.locator(".msg.reply", has_text="echo: echo signed").wait_for()
