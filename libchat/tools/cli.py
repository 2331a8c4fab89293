"""``libchat-cli``: chat with a running libchat from a terminal.

Type a message and press Enter. ``:close`` ends the dialog (1002), ``:new``
starts a new dialog, ``:quit`` (or Ctrl-D) leaves.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from twisted.internet import defer, task
from twisted.internet.stdio import StandardIO
from twisted.protocols.basic import LineReceiver

from libchat.protocol import codes
from libchat.tools.client import FrameClient, connect
from libchat.protocol.wire import MAGIC


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


class Console(LineReceiver):
    delimiter = b"\n"

    def __init__(self, client: FrameClient, user: str, dialog: str, done: defer.Deferred) -> None:
        self.client, self.user, self.dialog, self.done = client, user, dialog, done

    def connectionMade(self) -> None:
        self.say(f"connected as {self.user}, dialog {self.dialog}. "
                 ":close ends the dialog, :new starts one, :quit leaves.")

    def say(self, text: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text.strip():
            return
        if text == ":quit":
            self.transport.loseConnection()
        elif text == ":close":
            self.client.send({"event_type": codes.CLIENT_CLOSE, "dialog_id": self.dialog,
                              "user_id": self.user})
        elif text == ":new":
            self.dialog = new_dialog_id()
            self.say(f"-- new dialog {self.dialog} --")
        else:
            self.client.send({"event_type": codes.USER_MESSAGE, "dialog_id": self.dialog,
                              "user_id": self.user, "messages": {"content": text}})

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


def new_dialog_id() -> str:
    return "cli-" + uuid.uuid4().hex[:12]


async def run(reactor: Any, args: argparse.Namespace) -> None:
    client = await connect(reactor, args.front, args.magic)
    done: defer.Deferred[None] = defer.Deferred()
    console = Console(client, args.user, args.dialog or new_dialog_id(), done)
    StandardIO(console, reactor=reactor)

    def show(event: dict[str, Any]) -> None:
        console.say(render(event))
        client.events.get().addCallback(show)

    client.events.get().addCallback(show)

    def server_closed(_: object) -> None:
        console.say("-- server closed the connection --")
        if not done.called:
            done.callback(None)

    client.closed.addCallback(server_closed)
    await done
    client.transport.loseConnection()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="libchat-cli", description=__doc__.splitlines()[0])
    parser.add_argument("--front", default="tcp:host=127.0.0.1:port=8082",
                        help="client endpoint of libchat's front door (default: %(default)s)")
    parser.add_argument("--user", default="cli-user", help="your user_id")
    parser.add_argument("--dialog", help="dialog_id to use (default: a new one)")
    parser.add_argument("--magic", type=lambda v: int(v, 0), default=MAGIC)
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
