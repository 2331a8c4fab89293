"""Replies to the platforms: one send in flight per dialog, merged, split,
retried from the durable outbox (CONTRACT section 10).

A 2001 becomes outbox items (its text; one per image/file attachment),
written ahead to the :class:`~libchat.doors.platforms.ledger.Ledger`. Each
dialog has one sending loop: items go in order, a text item still waiting
takes in the texts of later 2001s (:func:`merge_messages`), a text is split
at the platform's limit and each part is remembered once accepted (so a
restart resumes at the next part, and a Lark ``uuid`` of ``<item>-<part>``
makes a re-sent part a no-op). A ``retry`` outcome backs off 1 s doubling to
60 s for 10 minutes from the first failure; ``permanent`` (or running out of
time) is logged, counted and dropped.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, Iterable, cast

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger

from . import outbound as ob
from libchat.histogram import Histogram

from libchat.interfaces import Unavailable

from .seam import ICallbackBook, IOutbox
from .textsplit import merge_messages, split_lark, split_wecom

TEXT_KINDS = ("text", "markdown")


@attrs.define
class SendStats:
    """Per app figures, read at scrape time (libchat.doors.web.metrics)."""

    sent: int = 0        # platform messages accepted
    retries: int = 0
    failures: int = 0    # items given up (permanent refusal or out of time)
    callbacks: dict[str, int] = attrs.Factory(lambda: defaultdict(int))  # status -> n
    callback_seconds: Histogram = attrs.Factory(Histogram)  # request in -> answer written


class Sender:
    """The outbox of one app (``platform`` ``wecom`` or ``lark``)."""

    log = Logger()

    def __init__(self, platform: str, app: Any, api: Any, ledger: IOutbox, clock: Any,
                 targets: ICallbackBook | None = None) -> None:
        """``ledger``: the outbox (one node: the Ledger; with ``--redis`` a
        :class:`libchat.cluster.outbox.RedisOutbox`). ``targets``: where reply
        targets are read (default ``ledger``; with ``--redis`` the cluster-wide
        book, since another node may have taken the dialog's callback)."""
        self.platform = platform
        self.app = app
        self.api = api
        self.ledger = ledger
        self.targets: ICallbackBook = (targets if targets is not None
                                       else cast(ICallbackBook, ledger))
        self.clock = clock
        self.stats = SendStats()
        self._queues: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._running: set[str] = set()
        self._stopping = False
        self._waits: set[defer.Deferred[Any]] = set()

    # -- in ----------------------------------------------------------------

    def resume(self, items: Iterable[dict[str, Any]] | None = None) -> None:
        """Send what the outbox kept for this app (after a restart), or
        ``items`` (taken over from a node that died, or found in Redis once it
        answered): they go before the dialog's waiting items, behind the one
        being sent; an item already queued is not queued twice."""
        fresh: dict[str, list[dict[str, Any]]] = defaultdict(list)
        queued = {i["id"] for q in self._queues.values() for i in q} if items is not None \
            else set()
        for item in list(self.ledger.items.values() if items is None else items):
            if item["app"] == self.app.name and item["platform"] == self.platform \
                    and item["id"] not in queued:
                fresh[item["dialog"]].append(item)
        for dialog, new in fresh.items():
            queue = self._queues[dialog]
            at = 1 if queue and queue[0].get("started") else 0
            queue[at:at] = new
        for dialog in list(self._queues):
            self._kick(dialog)

    def reply(self, event: dict[str, Any]) -> None:
        """One 2001 (or the text a 2003/2004 stands for) of a dialog."""
        dialog = event["dialog_id"]
        messages = event.get("messages") or {}
        text = messages.get("content") or ""
        kind = "markdown" if messages.get("format") == "markdown" else "text"
        queue = self._queues[dialog]
        if text:
            last = queue[-1] if queue else None
            if last is not None and last["kind"] == kind and not last.get("started"):
                last["text"] = merge_messages([last["text"], text])  # waited: one send
                self.ledger.put(last)
            else:
                self._add(dialog, {"kind": kind, "text": text})
        for attachment in messages.get("attachments") or ():
            if isinstance(attachment, dict) and attachment.get("type") in ("image", "file"):
                self._add(dialog, {"kind": attachment["type"], "att": attachment})
        self._kick(dialog)

    def _add(self, dialog: str, fields: dict[str, Any]) -> None:
        item = {"id": uuid.uuid4().hex, "app": self.app.name, "platform": self.platform,
                "dialog": dialog, "n": 0, **fields}
        self._queues[dialog].append(item)
        self.ledger.put(item)

    # -- the loop ------------------------------------------------------------

    def _kick(self, dialog: str) -> None:
        if dialog in self._running or self._stopping or not self._queues.get(dialog):
            return
        self._running.add(dialog)
        d = self._drain(dialog)
        d.addErrback(lambda f: self.log.failure("sending for {dialog} failed", f, dialog=dialog))
        d.addBoth(lambda _: self._running.discard(dialog))

    @defer.inlineCallbacks
    def _drain(self, dialog: str) -> Any:
        queue = self._queues[dialog]
        while queue and not self._stopping:
            item = queue[0]
            item["started"] = True
            yield self._send_item(item)
            if self._stopping:
                return
            queue.pop(0)
            self.ledger.finish(item["id"])
        self._queues.pop(dialog, None)

    @defer.inlineCallbacks
    def _send_item(self, item: dict[str, Any]) -> Any:
        target = yield self._target(item)  # a plain value: no reactor turn
        if target is None:
            if not self._stopping:  # stopping: the item stays for the next start
                self._give_up(item, "no reply target is known for the dialog")
            return
        if item["kind"] in TEXT_KINDS:
            parts = self._split(item)
            for n in range(item.get("n", 0), len(parts)):
                ok = yield self._try(item, lambda n=n: self.api.send(
                    self._text_body(item, target, parts[n], n)))
                if not ok:
                    return
                self.ledger.progress(item, n + 1)
            return
        key: list[Any] = []
        ok = yield self._try(item, lambda: self._upload(item, key))
        if ok:
            yield self._try(item, lambda: self.api.send(self._media_body(item, target, key[0])))

    @defer.inlineCallbacks
    def _target(self, item: dict[str, Any]) -> Any:
        """The dialog's reply target; a book that cannot answer now (Redis
        down) is asked again with the send back-off, as a failed send would be."""
        first: float | None = None
        attempt = 0
        while True:
            try:
                return (yield self.targets.target(item["dialog"]))
            except Unavailable as e:
                now = self.clock.seconds()
                first = now if first is None else first
                if self._stopping or ob.give_up(first, now):
                    return None
                attempt += 1
                self.stats.retries += 1
                self.log.warn("{platform} app {app}: reply target of {dialog} unknown "
                              "for now: {why}", platform=self.platform, app=self.app.name,
                              dialog=item["dialog"], why=str(e))
                wait = task.deferLater(self.clock, ob.backoff(attempt), lambda: None)
                self._waits.add(wait)
                try:
                    yield wait
                except defer.CancelledError:
                    return None
                finally:
                    self._waits.discard(wait)

    @defer.inlineCallbacks
    def _upload(self, item: dict[str, Any], key: list[Any]) -> Any:
        got = yield self.api.fetch(item["att"])
        if got.outcome != ob.OK:
            return got
        name = item["att"].get("name") or ("image.png" if item["kind"] == "image" else "file")
        result = yield self.api.upload(item["kind"], str(name), got.answer)
        if result.outcome == ob.OK:
            key[:] = [result.answer]
        return result

    @defer.inlineCallbacks
    def _try(self, item: dict[str, Any], call: Any) -> Any:
        """``call()`` until ok (True) or given up (False), backing off."""
        first: float | None = None
        attempt = 0
        while not self._stopping:
            if not self.ledger.holds(item):  # handed to another node: it sends it
                self.log.info("{platform} app {app}: a reply for {dialog} is sent by another "
                              "node now", platform=self.platform, app=self.app.name,
                              dialog=item["dialog"])
                return False
            result = yield call()
            if result.outcome == ob.OK:
                self.stats.sent += 1
                return True
            if result.outcome == ob.PERMANENT:
                self._give_up(item, f"refused: {result.detail} {_code(result.answer)}")
                return False
            now = self.clock.seconds()
            first = now if first is None else first
            if ob.give_up(first, now):
                self._give_up(item, f"still failing after 10 minutes: {result.detail}")
                return False
            attempt += 1
            self.stats.retries += 1
            wait = task.deferLater(self.clock, ob.backoff(attempt), lambda: None)
            self._waits.add(wait)
            try:
                yield wait
            except defer.CancelledError:
                return False
            finally:
                self._waits.discard(wait)
        return False

    def _give_up(self, item: dict[str, Any], why: str) -> None:
        self.stats.failures += 1
        self.log.error("{platform} app {app}: a reply for {dialog} was not delivered: {why}",
                       platform=self.platform, app=self.app.name, dialog=item["dialog"], why=why)

    # -- bodies --------------------------------------------------------------

    def _split(self, item: dict[str, Any]) -> list[str]:
        markdown = item["kind"] == "markdown"
        if self.platform == "wecom":
            return split_wecom(item["text"], markdown)
        return split_lark(item["text"], markdown)

    def _text_body(self, item: dict[str, Any], target: dict[str, Any], text: str,
                   n: int) -> dict[str, Any]:
        markdown = item["kind"] == "markdown"
        if self.platform == "wecom":
            return ob.wecom_text(target["to"], self.app.agent_id, text, markdown)
        mention = target.get("m") if n == 0 else None
        make = ob.lark_post_md if markdown else ob.lark_text
        return make(target["to"], text, f"{item['id']}-{n}", mention)

    def _media_body(self, item: dict[str, Any], target: dict[str, Any], key: str) -> dict[str, Any]:
        if self.platform == "wecom":
            return ob.wecom_media(target["to"], self.app.agent_id, item["kind"], key)
        make = ob.lark_image if item["kind"] == "image" else ob.lark_file
        return make(target["to"], key, f"{item['id']}-m")

    # -- stop ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop sending; what is unsent stays in the ledger for the next start."""
        self._stopping = True
        for wait in list(self._waits):
            wait.cancel()


def _code(answer: Any) -> str:
    if isinstance(answer, dict):
        for key in ("errcode", "code"):
            if key in answer:
                return f"({key} {answer[key]})"
    return ""
