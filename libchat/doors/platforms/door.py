"""The platform front door: callback endpoints on ``--web`` and the upstream
that turns a dialog's replies into platform messages (CONTRACT section 10).

``GET/POST /hooks/wecom/NAME`` and ``POST /hooks/lark/NAME`` hand the request
to :mod:`libchat.doors.platforms.callbacks` (verification before any further
parsing), answer at once, and route the message on the next reactor turn,
after the dedupe check: a callback's answer never waits for a program.
With several nodes the dedupe check is a Redis round trip (an
:class:`~.seam.ICallbackBook` answering a Deferred): the answer then waits
for it, and is a 503 (the platform retries) when Redis does not answer.
Each app is one :class:`PlatformUpstream` of channel ``wecom``/``lark``, so
its dialogs never reach frame or web upstreams; a reply of a dialog is sent
by the app its id names, whichever upstream object the router picked.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

from libchat.interfaces import IRouter, IUpstream, Unavailable
from libchat.protocol import codes
from libchat.protocol.events import BadEvent, check_upstream

from . import api as platform_api
from .callbacks import Answer, lark_callback, wecom_callback
from .config import LarkApp, WeComApp
from .ledger import Ledger
from .seam import ICallbackBook, IOutbox
from .sender import Sender
from .unified import Inbound

MAX_BODY = 1024 * 1024


@implementer(IUpstream)
class PlatformUpstream:
    """One configured app, as the router sees it."""

    def __init__(self, platform: str, app: Any, door: "PlatformDoor") -> None:
        self.channel = platform
        self.app = app
        self.fallback = app.common.fallback  # read by the router (core.policy)
        self.door = door
        # the same app on every node (libchat.cluster.router)
        self.cluster_key = f"{platform}:{getattr(app, 'name', '')}"

    def alive(self) -> bool:
        return True  # the outbox takes every reply; sending is its business

    def deliver(self, event: dict[str, Any]) -> None:
        self.door.deliver(self.channel, event)


class PlatformDoor:
    app = Klein()
    log = Logger()

    def __init__(self, router: IRouter, ledger: Ledger, clock: Any,
                 wecom: list[WeComApp], lark: list[LarkApp], http: Any = None,
                 callbacks: ICallbackBook | None = None, outbox: IOutbox | None = None) -> None:
        """``callbacks``: where taken callback ids and reply targets are kept
        (default: ``ledger``, on this node; with ``--redis`` a
        :class:`libchat.cluster.dedupe.RedisCallbackBook`, cluster-wide).
        ``outbox``: where replies wait to be sent (default: ``ledger``; with
        ``--redis`` a :class:`libchat.cluster.outbox.RedisOutbox`)."""
        self.router = router
        self.ledger = ledger
        self.callbacks: ICallbackBook = callbacks if callbacks is not None else ledger
        self.outbox: IOutbox = outbox if outbox is not None else ledger
        self.clock = clock
        self.apps: dict[tuple[str, str], Any] = {
            **{("wecom", a.name): a for a in wecom}, **{("lark", a.name): a for a in lark}}
        extra = {} if http is None else {"http": http}
        self.apis: dict[tuple[str, str], Any] = {
            **{("wecom", a.name): platform_api.WeComAPI(a, clock, **extra) for a in wecom},
            **{("lark", a.name): platform_api.LarkAPI(a, clock, **extra) for a in lark}}
        self.senders = {key: Sender(key[0], app, self.apis[key], self.outbox, clock,
                                    targets=self.callbacks)
                        for key, app in self.apps.items()}
        self.upstreams = {key: PlatformUpstream(key[0], app, self)
                          for key, app in self.apps.items()}
        self.bot_open_ids: dict[str, str | None] = {}

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        for upstream in self.upstreams.values():
            self.router.attach(upstream)
        for sender in self.senders.values():
            sender.resume()
        for (platform, name), api in self.apis.items():
            if platform == "lark":
                self._learn_bot(name, api)

    def resume(self, items: list[dict[str, Any]]) -> None:
        """Send ``items`` too (an outbox taken over from a dead node, or found
        in Redis): each app's sender takes its own."""
        for sender in self.senders.values():
            sender.resume(items)

    @defer.inlineCallbacks
    def _learn_bot(self, name: str, api: Any) -> Any:
        """Until the bot's open_id is known, any mention counts (lark_event)."""
        try:
            self.bot_open_ids[name] = yield platform_api.lark_bot_open_id(api)
        except Exception:
            self.log.failure("lark app {app}: reading the bot's open_id failed", app=name)

    def stop(self) -> "defer.Deferred[None]":
        for sender in self.senders.values():
            sender.stop()
        for upstream in self.upstreams.values():
            self.router.detach(upstream)
        return self.ledger.compact()

    # -- callbacks (mounted at /hooks/ by libchat.doors.web.app) -----------------

    @app.route("/wecom/<string:name>", methods=["GET", "POST"])
    def wecom(self, request: IRequest, name: str) -> bytes | defer.Deferred[bytes]:
        started = self.clock.seconds()
        app = self.apps.get(("wecom", name))
        if app is None:
            return self._write(request, Answer(404, b"404\n"), "wecom", name, started)
        answer = wecom_callback(app, request.method.decode("ascii", "replace"), request.args,
                                self._body(request), MAX_BODY)
        return self._write(request, answer, "wecom", name, started)

    @app.route("/lark/<string:name>", methods=["POST"])
    def lark(self, request: IRequest, name: str) -> bytes | defer.Deferred[bytes]:
        started = self.clock.seconds()
        app = self.apps.get(("lark", name))
        if app is None:
            return self._write(request, Answer(404, b"404\n"), "lark", name, started)
        headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders() if v}
        answer = lark_callback(app, "POST", headers, self._body(request),
                               self.bot_open_ids.get(name), MAX_BODY)
        return self._write(request, answer, "lark", name, started)

    def _body(self, request: IRequest) -> bytes:
        return request.content.read(MAX_BODY + 1) if request.content is not None else b""

    def _write(self, request: IRequest, answer: Answer, platform: str, name: str,
               started: float) -> bytes | defer.Deferred[bytes]:
        if answer.why:
            self.log.info("{platform} app {app}: callback answered {status}: {why}",
                          platform=platform, app=name, status=answer.status, why=answer.why)
        if answer.inbound is not None:
            taking = self._accept(platform, name, answer.inbound)
            if taking is not None:  # the book answers later (Redis): so does the callback
                return taking.addCallbacks(
                    lambda _: self._answer(request, answer, platform, name, started),
                    lambda f: self._not_taken(f, request, platform, name, started))
        return self._answer(request, answer, platform, name, started)

    def _not_taken(self, f: Failure, request: IRequest, platform: str, name: str,
                   started: float) -> bytes:
        """Not known whether the id was taken: 503, route nothing, and let the
        platform retry (never a false "seen", never a false 200)."""
        if f.check(Unavailable):
            self.log.warn("{platform} app {app}: callback answered 503: {why}",
                          platform=platform, app=name, why=f.getErrorMessage())
        else:
            self.log.failure("{platform} app {app}: the dedupe check failed", f,
                             platform=platform, app=name)
        return self._answer(request, Answer(503, b"503\n"), platform, name, started)

    def _answer(self, request: IRequest, answer: Answer, platform: str, name: str,
                started: float) -> bytes:
        sender = self.senders.get((platform, name))
        request.setResponseCode(answer.status)
        request.setHeader(b"Content-Type", answer.content_type.encode("ascii"))
        if sender is not None:
            sender.stats.callbacks[str(answer.status)] += 1
            sender.stats.callback_seconds.observe(self.clock.seconds() - started)
        return answer.body

    def _accept(self, platform: str, name: str,
                inbound: Inbound) -> defer.Deferred[None] | None:
        """Dedupe, then route on the next turn; a Deferred when the book answers one."""
        seen = self.callbacks.accept(f"{platform}:{name}", inbound.dedupe_key,
                                     inbound.dialog_id, inbound.reply_to)
        if isinstance(seen, defer.Deferred):
            return seen.addCallback(self._taken, platform, name, inbound)
        self._taken(seen, platform, name, inbound)
        return None

    def _taken(self, seen: bool, platform: str, name: str, inbound: Inbound) -> None:
        if not seen:  # else a platform retry of what was taken already
            self.clock.callLater(0, self._route, platform, name, inbound)

    def _route(self, platform: str, name: str, inbound: Inbound) -> None:
        app = self.apps[(platform, name)]
        try:
            event = check_upstream(inbound.event(intent=app.common.intent))
        except BadEvent as e:
            self.log.error("{platform} app {app}: a message could not be routed: {e}",
                           platform=platform, app=name, e=e)
            return
        receipt = self.router.receive(self.upstreams[(platform, name)], event)
        if isinstance(receipt, defer.Deferred):  # a cluster node: 2004 only in the log
            receipt.addErrback(lambda f: self.log.failure("routing a {platform} message failed",
                                                          f, platform=platform))

    # -- replies -----------------------------------------------------------------

    def deliver(self, platform: str, event: dict[str, Any]) -> None:
        dialog = event.get("dialog_id")
        parts = dialog.split(":") if isinstance(dialog, str) else []
        sender = self.senders.get((platform, parts[1])) if len(parts) > 2 else None
        if sender is None:
            return
        kind = event.get("event_type")
        if kind == codes.REPLY:
            sender.reply(event)
        elif kind == codes.UNSUPPORTED:
            sender.reply({"dialog_id": dialog,
                          "messages": {"content": sender.app.common.unhandled_text}})
        elif kind == codes.ERROR and event.get("code") == codes.BUSY and \
                sender.app.common.busy_text:
            sender.reply({"dialog_id": dialog, "messages": {"content": sender.app.common.busy_text}})
