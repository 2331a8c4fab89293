"""Remote programs (CONTRACT section 12, docs/postoffice-programs.md): a
program whose package.json says ``"runtime": "postoffice"`` is served by the
connected post-office clients named ``client`` or ``client_<digits>``.

A dialog is bound to the served client with the fewest bound dialogs and
stays with it. Each 1001 becomes one envelope from
``/libchat/dialog/<dialog_id>``; the client's envelopes back to that address
become 2001 (and 2002/2003 with ``state``). No process: instances never
count against ``--max-programs``. With no client connected, messages wait up
to ``wait`` seconds, then the instance fails (2002 ``program_failed``); the
bound client going away ends it as exited (2002 ``program_exited``).
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from itertools import count
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.doors.postoffice.seam import IHub, IHubListener
from libchat.interfaces import IInstance, IInstanceOwner, IRuntime, NoRoom
from libchat.protocol import codes
from libchat.runtimes.held import HeldCalls

PREFIX = "/libchat/dialog/"
DEFAULT_WAIT = 10.0
_ids = count(1)


def settings(section: dict[str, Any]) -> tuple[str, bool, float] | str:
    """(client, multi, wait) from a program's libchat section, or why not."""
    client = section.get("client")
    if not isinstance(client, str) or not client or client.startswith(PREFIX):
        return "no usable \"client\" in package.json"
    turns = section.get("turns", "single")
    if turns not in ("single", "multi"):
        return f"\"turns\" must be single or multi, not {turns!r}"
    wait = section.get("wait", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        return "\"wait\" must be a number of seconds"
    return client, turns == "multi", float(wait)


@implementer(IRuntime, IHubListener)
class PostofficeRuntime(HeldCalls):
    """Starts :class:`RemoteInstance` s; listens on the hub for their replies."""

    log = Logger()

    def __init__(self, clock: IReactorTime, hub: IHub | None) -> None:
        self.clock, self.hub = clock, hub
        self._programs: dict[str, tuple[str, bool, float]] = {}
        self._by_dialog: dict[str, RemoteInstance] = {}
        HeldCalls.__init__(self)
        if hub is not None:
            hub.listen(PREFIX, self)

    # -- the library asks ------------------------------------------------------------

    def check(self, program: Any) -> str | None:
        if self.hub is None:
            return "no --postoffice listener"
        found = settings(dict(program.section or {}))
        if isinstance(found, str):
            return found
        self._programs[program.name] = found
        return None

    # -- choosing a client -------------------------------------------------------------

    def serves(self, client: str, client_id: str) -> bool:
        return client_id == client or re.fullmatch(
            re.escape(client) + r"_\d+", client_id) is not None

    def pick(self, client: str) -> str | None:
        """The served, connected clientID with the fewest bound dialogs."""
        assert self.hub is not None
        load: dict[str, int] = {c: 0 for c in self.hub.clients() if self.serves(client, c)}
        for i in self._by_dialog.values():
            if i.bound in load:
                load[i.bound] += 1
        return min(sorted(load), key=lambda c: load[c]) if load else None

    # -- IRuntime ----------------------------------------------------------------------

    def counts(self, program: str) -> bool:
        return False

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> "RemoteInstance":
        known = self._programs.get(program)
        if known is None or self.hub is None:
            raise NoRoom(f"program {program} is unavailable")
        old = self._by_dialog.pop(dialog_id, None)
        if old is not None:
            old._end(True, "replaced")
        instance = RemoteInstance(self, program, known, dialog_id, user_id, owner)
        self._by_dialog[dialog_id] = instance
        instance._try_bind()
        return instance

    def stopAll(self) -> "defer.Deferred[Any]":
        return defer.DeferredList([i.stop() for i in list(self._by_dialog.values())],
                                  consumeErrors=True)

    # -- IHubListener ------------------------------------------------------------------

    def envelope(self, message: dict[str, Any], raw: str) -> None:
        to = message.get("to")
        targets = to if isinstance(to, list) else [to]
        for t in targets:
            if isinstance(t, str) and t.startswith(PREFIX):
                instance = self._by_dialog.get(t[len(PREFIX):])
                if instance is not None and instance.bound == message.get("from"):
                    instance._reply(message)

    def client_connected(self, client_id: str) -> None:
        for i in list(self._by_dialog.values()):
            if i.bound is None:
                i._try_bind()

    def client_gone(self, client_id: str) -> None:
        for i in list(self._by_dialog.values()):
            if i.bound == client_id:
                i._end(True, f"client {client_id} disconnected")


@implementer(IInstance)
class RemoteInstance:
    """One dialog bound (or waiting to be bound) to one remote client."""

    pid = None

    def __init__(self, runtime: PostofficeRuntime, program: str,
                 known: tuple[str, bool, float], dialog_id: str, user_id: str,
                 owner: IInstanceOwner) -> None:
        self.runtime, self.program = runtime, program
        self.client, self.multi, self.wait = known
        self.dialog_id, self.user_id, self.owner = dialog_id, user_id, owner
        self.instance_id = f"postoffice-{next(_ids)}"
        self.token = secrets.token_urlsafe(24)  # never bound: the memory API refuses it
        self.address = PREFIX + dialog_id
        self.bound: str | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._last: dict[str, Any] | None = None  # the user message being answered
        self._gone = False
        self._done: defer.Deferred[None] = defer.Deferred()
        self._timer: IDelayedCall | None = runtime.clock.callLater(
            self.wait, self._give_up)

    def __repr__(self) -> str:
        return f"<RemoteInstance {self.instance_id} {self.program} {self.dialog_id}>"

    def _try_bind(self) -> None:
        if self._gone or self.bound is not None:
            return
        chosen = self.runtime.pick(self.client)
        if chosen is None:
            return
        self.bound = chosen
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.runtime._report(lambda: self.owner.instanceConnected(self))
        while self._queue and not self._gone:
            self._deliver(self._queue.popleft())

    def _give_up(self) -> None:
        self._timer = None
        if self.bound is None and not self._gone:
            self._end(False, f"no client {self.client} connected within {self.wait:g}s")

    # -- IInstance ---------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        if self._gone:
            return
        if self.bound is None:
            if event.get("event_type") == codes.CLIENT_CLOSE:
                self._queue.clear()
                return
            self._queue.append(event)
            return
        self._deliver(event)

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        if not self._gone:
            self._end(True, "stopped")
        return self._done

    # -- envelopes ---------------------------------------------------------------------

    def _envelope(self, content: str, **extra: Any) -> dict[str, Any]:
        return {"from": self.address, "to": self.bound,
                "subject": f"dialog {self.dialog_id}", "content": content, "type": "msg",
                "createTime": int(self.runtime.clock.seconds() * 1000), **extra}

    def _deliver(self, event: dict[str, Any]) -> None:
        assert self.runtime.hub is not None
        kind = event.get("event_type")
        if kind == codes.USER_MESSAGE:
            self._last = event
            messages = event.get("messages") or {}
            env = self._envelope(
                str(messages.get("content", "")),
                attachments=list(messages.get("attachments") or []),
                libchat={"dialog_id": self.dialog_id, "user_id": self.user_id,
                         "message_id": event.get("message_id")})
        elif kind == codes.CLIENT_CLOSE:
            env = self._envelope("", state=codes.CLIENT_CLOSE,
                                 libchat={"dialog_id": self.dialog_id,
                                          "user_id": self.user_id})
        else:
            return
        if not self.runtime.hub.send(env):
            self._end(True, f"client {self.bound} is not connected")

    def _reply(self, message: dict[str, Any]) -> None:
        if self._gone:
            return
        state = message.get("state")
        body = message.get("content")
        content, attachments = body, cast(list[Any], [])
        if isinstance(body, dict):
            content, attachments = body.get("content", ""), body.get("attachments") or []
        base = {"dialog_id": self.dialog_id, "user_id": self.user_id}
        if state == codes.UNSUPPORTED:
            last = self._last or {}
            declined = {"event_type": codes.UNSUPPORTED, **base,
                        "message_id": last.get("message_id"),
                        "messages": last.get("messages") or {"content": "",
                                                             "attachments": []}}
            self._report_event(declined)
            self._end(True, "declined")
            return
        if isinstance(content, str) and (content or state is None):
            reply = {"event_type": codes.REPLY, **base,
                     "messages": {"content": content,
                                  "attachments": [a for a in attachments
                                                  if isinstance(a, dict)]}}
            self._report_event(reply)
        if state == codes.ENDED or not self.multi:
            self._report_event({"event_type": codes.ENDED, **base})
            self._end(True, "answered")

    def _report_event(self, event: dict[str, Any]) -> None:
        self.runtime._report(lambda: self.owner.instanceEvent(self, event))

    def _end(self, connected: bool, detail: str) -> None:
        if self._gone:
            return
        self._gone = True
        self._queue.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.runtime._by_dialog.get(self.dialog_id) is self:
            del self.runtime._by_dialog[self.dialog_id]

        def gone() -> None:
            self.owner.instanceGone(self, connected, detail)
            self._done.callback(None)
        self.runtime._report(gone)
