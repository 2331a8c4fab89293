"""The platforms' HTTP APIs as libchat calls them, over treq.

Each call answers an outcome of :mod:`libchat.doors.platforms.outbound`
(``ok``/``refresh_token``/``retry``/``permanent``) with the parsed answer, and
never raises for what the network or the platform did. Tokens come from a
:class:`~libchat.doors.platforms.tokens.TokenCache`; concurrent calls share
one fetch. Nothing here logs a URL (WeCom puts the token in the query) or a
body.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import treq
from twisted.internet import defer
from twisted.logger import Logger

from . import outbound as ob
from .config import LarkApp, WeComApp
from .tokens import TokenCache

MAX_ATTACHMENT = 10 * 1024 * 1024
TIMEOUT = 30.0


@attrs.frozen
class Result:
    outcome: str
    answer: Any = None
    detail: str = ""


class TooLarge(Exception):
    pass


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


class _API:
    log = Logger()
    outcome_of: Any

    def __init__(self, clock: Any, http: Any = treq) -> None:
        self.clock = clock
        self.http = http
        self.tokens = TokenCache(clock)
        self._fetch: defer.Deferred[Result] | None = None

    @defer.inlineCallbacks
    def call(self, method: str, url: str, **kw: Any) -> Any:
        """One request -> Result (status None: no answer at all)."""
        try:
            response = yield self.http.request(method, url, timeout=TIMEOUT, **kw)
            raw = yield self.http.content(response)
        except Exception as e:  # network error, timeout, refused: all retried
            return Result(ob.RETRY, None, type(e).__name__)
        status = response.code
        return Result(self.outcome_of(status, raw), _json(raw), f"HTTP {status}")

    def token(self) -> "defer.Deferred[Result]":
        """Result(ok, token) or the fetch's failure outcome."""
        current = self.tokens.current()
        if current is not None:
            return defer.succeed(Result(ob.OK, current))
        if self._fetch is None:
            self.tokens.begin_fetch()
            self._fetch = self._fetch_token()
            self._fetch.addBoth(self._fetched)
        waiter: defer.Deferred[Result] = defer.Deferred()

        def share(result: Result) -> Result:
            waiter.callback(result)
            return result

        self._fetch.addCallback(share)
        return waiter

    def _fetched(self, result: Result) -> Result:
        self._fetch = None
        if result.outcome == ob.OK:
            token, life = result.answer
            self.tokens.store(token, life)
            return Result(ob.OK, token)
        self.tokens.fetch_failed()
        return result

    def _fetch_token(self) -> "defer.Deferred[Result]":
        raise NotImplementedError

    @defer.inlineCallbacks
    def with_token(self, request: Any) -> Any:
        """``request(token)`` -> Result; a refused token is refetched and the
        call tried once more (section 10)."""
        for attempt in (1, 2):
            got = yield self.token()
            if got.outcome != ob.OK:
                return Result(ob.RETRY if got.outcome == ob.REFRESH_TOKEN else got.outcome,
                              None, "token: " + got.detail)
            result = yield request(got.answer)
            if result.outcome != ob.REFRESH_TOKEN:
                return result
            self.tokens.invalidate(got.answer)
        return Result(ob.RETRY, result.answer, "token refused twice")

    @defer.inlineCallbacks
    def fetch(self, attachment: dict[str, Any]) -> Any:
        """The bytes of an attachment given by ``option.url`` or ``option.data``
        (10 MiB at most) -> Result(ok, bytes)."""
        option = attachment.get("option") or {}
        if isinstance(option.get("data"), str):
            try:
                data = base64.b64decode(option["data"], validate=True)
            except ValueError:
                return Result(ob.PERMANENT, None, "option.data is not base64")
            if len(data) > MAX_ATTACHMENT:
                return Result(ob.PERMANENT, None, "attachment over 10 MiB")
            return Result(ob.OK, data)
        url = option.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return Result(ob.PERMANENT, None, "attachment without option.url or option.data")
        try:
            response = yield self.http.get(url, timeout=TIMEOUT)
        except Exception as e:
            return Result(ob.RETRY, None, type(e).__name__)
        if response.code >= 500 or response.code == 429:
            yield self.http.content(response)
            return Result(ob.RETRY, None, f"fetch HTTP {response.code}")
        if response.code != 200:
            yield self.http.content(response)
            return Result(ob.PERMANENT, None, f"fetch HTTP {response.code}")
        length = response.length
        if isinstance(length, int) and length > MAX_ATTACHMENT:
            response.deliverBody(_Discard())
            return Result(ob.PERMANENT, None, "attachment over 10 MiB")
        chunks: list[bytes] = []

        def collect(chunk: bytes) -> None:
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_ATTACHMENT:
                raise TooLarge()

        try:
            yield self.http.collect(response, collect)
        except TooLarge:
            return Result(ob.PERMANENT, None, "attachment over 10 MiB")
        except Exception as e:
            return Result(ob.RETRY, None, type(e).__name__)
        return Result(ob.OK, b"".join(chunks))


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


class WeComAPI(_API):
    outcome_of = staticmethod(ob.wecom_outcome)

    def __init__(self, app: WeComApp, clock: Any, http: Any = treq) -> None:
        super().__init__(clock, http)
        self.app = app

    @defer.inlineCallbacks
    def _fetch_token(self) -> Any:
        result = yield self.call("GET", f"{self.app.api_base}/cgi-bin/gettoken",
                                 params={"corpid": self.app.corp_id,
                                         "corpsecret": self.app.secret})
        answer = result.answer if isinstance(result.answer, dict) else {}
        if result.outcome == ob.OK and isinstance(answer.get("access_token"), str):
            return Result(ob.OK, (answer["access_token"], float(answer.get("expires_in", 7200))))
        return Result(ob.PERMANENT if result.outcome == ob.PERMANENT else ob.RETRY, None,
                      f"gettoken errcode {answer.get('errcode')}")

    def send(self, body: dict[str, Any]) -> "defer.Deferred[Result]":
        url = f"{self.app.api_base}/cgi-bin/message/send"
        return self.with_token(lambda token: self.call(
            "POST", url, params={"access_token": token}, json=body))

    @defer.inlineCallbacks
    def upload(self, kind: str, name: str, data: bytes) -> Any:
        """``media/upload`` (field ``media``) -> Result(ok, media_id)."""
        url = f"{self.app.api_base}/cgi-bin/media/upload"
        result = yield self.with_token(lambda token: self.call(
            "POST", url, params={"access_token": token, "type": kind},
            files={"media": (name, "application/octet-stream", data)}))
        if result.outcome == ob.OK:
            return Result(ob.OK, result.answer.get("media_id"))
        return result


class LarkAPI(_API):
    outcome_of = staticmethod(ob.lark_outcome)

    def __init__(self, app: LarkApp, clock: Any, http: Any = treq) -> None:
        super().__init__(clock, http)
        self.app = app

    @defer.inlineCallbacks
    def _fetch_token(self) -> Any:
        result = yield self.call(
            "POST", f"{self.app.api_base}/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": self.app.app_id, "app_secret": self.app.app_secret})
        answer = result.answer if isinstance(result.answer, dict) else {}
        if result.outcome == ob.OK and isinstance(answer.get("tenant_access_token"), str):
            return Result(ob.OK, (answer["tenant_access_token"], float(answer.get("expire", 7200))))
        return Result(ob.PERMANENT if result.outcome == ob.PERMANENT else ob.RETRY, None,
                      f"tenant token code {answer.get('code')}")

    def _auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def send(self, body: dict[str, Any]) -> "defer.Deferred[Result]":
        url = f"{self.app.api_base}/open-apis/im/v1/messages"
        return self.with_token(lambda token: self.call(
            "POST", url, params={"receive_id_type": "chat_id"}, json=body,
            headers=self._auth(token)))

    @defer.inlineCallbacks
    def upload(self, kind: str, name: str, data: bytes) -> Any:
        """``im/v1/images`` or ``im/v1/files`` -> Result(ok, image_key/file_key)."""
        if kind == "image":
            url, fields, key = (f"{self.app.api_base}/open-apis/im/v1/images",
                                {"image_type": "message"}, "image_key")
            files = {"image": (name, "application/octet-stream", data)}
        else:
            url, fields, key = (f"{self.app.api_base}/open-apis/im/v1/files",
                                {"file_type": ob.lark_file_type(name), "file_name": name},
                                "file_key")
            files = {"file": (name, "application/octet-stream", data)}
        result = yield self.with_token(lambda token: self.call(
            "POST", url, data=fields, files=files, headers=self._auth(token)))
        if result.outcome == ob.OK:
            return Result(ob.OK, (result.answer.get("data") or {}).get(key))
        return result


@defer.inlineCallbacks
def lark_bot_open_id(api: LarkAPI) -> Any:
    """The bot's own open_id (``GET /open-apis/bot/v3/info``), or None."""
    result = yield api.with_token(lambda token: api.call(
        "GET", f"{api.app.api_base}/open-apis/bot/v3/info", headers=api._auth(token)))
    if result.outcome == ob.OK and isinstance(result.answer, dict):
        bot = result.answer.get("bot") or {}
        return bot.get("open_id") if isinstance(bot.get("open_id"), str) else None
    return None
