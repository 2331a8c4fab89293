"""``libchat-cli``: chat with a running libchat from a terminal.

Type a message and press Enter. ``:close`` ends the dialog (1002), ``:new``
starts a new dialog, ``:quit`` (or Ctrl-D) leaves.

Three rules make it safe to share a server with other people and scripts:

- It shows only the events of its own dialogs (the one it started with and
  each ``:new`` one). The server hands replies it kept for a client that left
  to the next front connection (docs/protocol.md, "Where replies go"); those
  belong to someone else and are dropped unseen.
- It prints a ``> `` prompt only when stdin is a terminal; piped input gets
  plain output lines, nothing else, so scripts can read them.
- When its input ends (end of file, Ctrl-D or ``:quit``) it waits, at most
  ``--wait`` seconds (default 10), until every message it sent got its answer
  (a 2001 for it, the dialog's 2002, a 2003 or a 2004), so
  ``printf '/echo x\\n' | libchat-cli`` prints the echo.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

from twisted.internet import defer, interfaces, task
from twisted.internet.error import ConnectError
from twisted.internet.stdio import StandardIO
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC
from libchat.tools.client import FrameClient, connect

PROMPT = "> "


def render(event: dict[str, Any]) -> str:
    """One line of text for a server event."""
    etype = event.get("event_type")
    who = event.get("program") or "libchat"
    if etype == codes.REPLY:
        tag = f"{who}, background" if event.get("background") else who
        return f"[{tag}] {event.get('messages', {}).get('content', '')}"
    if etype == codes.ENDED:
        return f"-- dialog ended: {event.get('reason')} (you may start another topic) --"
    if etype == codes.UNSUPPORTED:
        return "-- no program handles that (2003); try /<program> or other words --"
    if etype == codes.ERROR:
        return f"!! {event.get('code')}: {event.get('message')}"
    return repr(event)


def new_dialog_id() -> str:
    return "cli-" + uuid.uuid4().hex[:12]


def new_message_id() -> str:
    return "cli-m-" + uuid.uuid4().hex[:12]


CLOSE = object()  # what a 1002 waits for: the dialog's 2002


class Session:
    """Which dialogs are ours and which of our events still wait for an answer.
    No I/O: the console asks it what to send and whether to show an event."""

    def __init__(self, user: str, dialog: str) -> None:
        self.user, self.dialog = user, dialog
        self.own = {dialog}
        self.pending: dict[str, list[Any]] = {}  # dialog -> message ids (or CLOSE)

    def message(self, text: str) -> dict[str, Any]:
        message_id = new_message_id()
        self.pending.setdefault(self.dialog, []).append(message_id)
        return {"event_type": codes.USER_MESSAGE, "dialog_id": self.dialog,
                "user_id": self.user, "message_id": message_id,
                "messages": {"content": text}}

    def close(self) -> dict[str, Any]:
        self.pending.setdefault(self.dialog, []).append(CLOSE)
        return {"event_type": codes.CLIENT_CLOSE, "dialog_id": self.dialog,
                "user_id": self.user}

    def new(self) -> str:
        self.dialog = new_dialog_id()
        self.own.add(self.dialog)
        return self.dialog

    def waiting(self) -> int:
        """How many sent events have not been answered yet."""
        return sum(len(ids) for ids in self.pending.values())

    def accept(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` is ours to show; settles what it answers.

        An event without a ``dialog_id`` is about this connection (say, a
        2004 for a frame it sent) and is ours."""
        dialog = event.get("dialog_id")
        if dialog is not None and dialog not in self.own:
            return False
        etype, message_id = event.get("event_type"), event.get("message_id")
        waiting = self.pending.get(dialog, []) if dialog is not None else []
        if etype == codes.ENDED:
            waiting.clear()  # the foreground ended: nothing more comes for what was sent
        elif message_id is not None and etype in (codes.REPLY, codes.UNSUPPORTED, codes.ERROR):
            for ids in [waiting] if dialog is not None else self.pending.values():
                if message_id in ids:
                    ids.remove(message_id)
        elif etype == codes.ERROR:
            waiting.clear()  # an error about the dialog as a whole
        elif etype == codes.REPLY:  # a reply that names no message answers the oldest
            ids = [i for i in waiting if i is not CLOSE]
            if ids:
                waiting.remove(ids[0])
        return True

    def label(self, event: dict[str, Any]) -> str:
        """``render`` plus the dialog, when it is not the current one."""
        text = render(event)
        dialog = event.get("dialog_id")
        return text if dialog in (None, self.dialog) else f"(dialog {dialog}) {text}"


@implementer(interfaces.IHalfCloseableProtocol)
class Console(LineReceiver):
    """Lines from stdin become events; our events become lines on stdout.

    With piped input a ``:close`` waits (at most ``wait`` seconds) until what
    was sent before it is answered, and the lines after it wait too: a script
    reads like a person who lets the program answer before closing."""

    delimiter = b"\n"
    MAX_LENGTH = DEFAULT_MAX_FRAME  # a long pasted line is a message, not a reason to quit

    def __init__(self, client: FrameClient, session: Session, clock: Any,
                 wait: float, interactive: bool) -> None:
        self.client, self.session, self.clock = client, session, clock
        self.wait, self.interactive = wait, interactive
        self.done: defer.Deferred[None] = defer.Deferred()
        self.leaving = self.finished = False
        self.backlog: list[bytes] = []  # lines read while a :close waits
        self._hold: Any = None  # the bound on that wait
        self._give_up: Any = None

    def _out(self) -> Any:
        assert self.transport is not None, "used before connectionMade"
        return self.transport

    def connectionMade(self) -> None:
        self.say(f"connected as {self.session.user}, dialog {self.session.dialog}. "
                 ":close ends the dialog, :new starts one, :quit leaves.")

    def say(self, text: str) -> None:
        """Print a line; on a terminal, the prompt stays below it."""
        if self.interactive:
            # \r and erase-line: the line replaces the prompt, a new prompt follows
            data = "\r\x1b[K" + text + "\n" + ("" if self.leaving else PROMPT)
        else:
            data = text + "\n"
        self._out().write(data.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        if self._hold is not None:
            self.backlog.append(line)
        elif not self.leaving:
            self._line(line)

    def _line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text == ":quit":
            self.leave()
        elif text == ":close":
            if not self.interactive and self.session.pending.get(self.session.dialog):
                self._hold = self.clock.callLater(self.wait, self._release)
                return
            self.client.send(self.session.close())
        elif text == ":new":
            self.say(f"-- new dialog {self.session.new()} --")
            return
        elif text.strip():
            self.client.send(self.session.message(text))
        if self.interactive and not self.leaving:
            self._out().write(PROMPT.encode())

    def _release(self) -> None:
        """Send the held :close, then the lines read meanwhile."""
        if self._hold.active():
            self._hold.cancel()
        self._hold = None
        self.client.send(self.session.close())
        lines, self.backlog = self.backlog, []
        for line in lines:
            self.lineReceived(line)
        self._maybe_finish()

    def event(self, event: dict[str, Any]) -> None:
        if not self.session.accept(event):
            return  # another client's dialog: not ours to show
        self.say(self.session.label(event))
        if self._hold is not None and not self.session.pending.get(self.session.dialog):
            self._release()
        self._maybe_finish()

    def readConnectionLost(self) -> None:
        self.leave()

    def writeConnectionLost(self) -> None:
        self.leave()

    def leave(self) -> None:
        """Input ended: wait (bounded) for answers to what was sent, then finish."""
        if self.leaving:
            return
        self.leaving = True
        if self._maybe_finish():
            return

        def give_up() -> None:
            self.say(f"-- no answer to {self.session.waiting()} of the events sent "
                     f"after {self.wait:g} s; leaving --")
            self._finish()

        self._give_up = self.clock.callLater(self.wait, give_up)

    def _maybe_finish(self) -> bool:
        if self.leaving and self._hold is None and not self.session.waiting():
            self._finish()
            return True
        return False

    def server_closed(self) -> None:
        self.say("-- server closed the connection --")
        self.leaving = True
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for call in (self._give_up, self._hold):
            if call is not None and call.active():
                call.cancel()
        self._give_up = self._hold = None
        if self.interactive:
            self._out().write(b"\r\x1b[K")
        self._out().loseConnection()  # connectionLost follows once stdout is flushed

    def connectionLost(self, reason: Any = None) -> None:
        for call in (self._give_up, self._hold):
            if call is not None and call.active():
                call.cancel()
        if not self.done.called:
            self.done.callback(None)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, args.front, args.magic)
    except ConnectError as e:
        print(f"libchat-cli: cannot connect to {args.front}: {e} "
              "(is `twistd -n libchat` running? see --front)", file=sys.stderr)
        raise SystemExit(1)
    interactive = args.prompt if args.prompt is not None else os.isatty(0)
    session = Session(args.user, args.dialog or new_dialog_id())
    console = Console(client, session, reactor, args.wait, interactive)
    StandardIO(console, reactor=reactor)

    def show(event: dict[str, Any]) -> None:
        console.event(event)
        client.events.get().addCallback(show)

    client.events.get().addCallback(show)
    closed_by_server = []

    def server_closed(_: object) -> None:
        if not console.done.called:
            closed_by_server.append(True)
            console.server_closed()

    client.closed.addCallback(server_closed)
    await console.done
    if client.transport is not None:
        client.transport.loseConnection()
    await client.closed
    if closed_by_server:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="libchat-cli", description="Chat with a running libchat from a terminal.",
        epilog="Only your own dialogs' events are shown. The '> ' prompt appears when "
               "stdin is a terminal. At end of input (or :quit) the CLI waits up to "
               "--wait seconds for the answers to what it sent.")
    parser.add_argument("--front", default="tcp:host=127.0.0.1:port=8082",
                        help="client endpoint of libchat's front door (default: %(default)s)")
    parser.add_argument("--user", default="cli-user", help="your user_id")
    parser.add_argument("--dialog", help="dialog_id to use (default: a new one)")
    parser.add_argument("--magic", type=lambda v: int(v, 0), default=MAGIC)
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for pending answers when input ends "
                             "(default: %(default)s)")
    parser.add_argument("--prompt", action=argparse.BooleanOptionalAction, default=None,
                        help="show the '> ' prompt (default: when stdin is a terminal)")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
