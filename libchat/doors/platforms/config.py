"""The ``[wecom.NAME]`` and ``[lark.NAME]`` tables of the section 9 file.

Pure: a table arrives as the parsed TOML dict, and the section 9 secret forms
(``key``, ``key_file``, ``key_env``) are resolved by the injected ``secret``
callable, which the configuration loader owns. Any problem is a
:class:`ConfigError` naming the table and the key (never a secret's value),
so twistd can refuse to start with one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .ids import PART
from .wecom_crypto import decode_key

SecretReader = Callable[[Mapping[str, Any], str], "str | None"]
INTENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEFAULT_UNHANDLED = "Sorry, no tool here can help with that."
WECOM_API = "https://qyapi.weixin.qq.com"
LARK_API = "https://open.feishu.cn"
COMMON = ("intent", "fallback", "unhandled_text", "busy_text")
SECRET_FORMS = ("", "_file", "_env")


class ConfigError(ValueError):
    def __init__(self, table: str, key: str | None, why: str) -> None:
        where = f"[{table}]" + (f" {key}" if key else "")
        super().__init__(f"{where}: {why}")
        self.table, self.key = table, key


def inline_secret(table: Mapping[str, Any], key: str) -> str | None:
    """The inline form only (tests; the loader injects the full reader)."""
    value = table.get(key)
    return value if isinstance(value, str) else None


@attrs.frozen
class Common:
    intent: str | None = None
    fallback: str | None = None
    unhandled_text: str = DEFAULT_UNHANDLED
    busy_text: str | None = None


@attrs.frozen
class WeComApp:
    name: str
    corp_id: str
    agent_id: int
    token: str = attrs.field(repr=False)
    encoding_aes_key: str = attrs.field(repr=False)
    secret: str = attrs.field(repr=False)
    api_base: str = WECOM_API
    common: Common = Common()


@attrs.frozen
class LarkApp:
    name: str
    app_id: str
    app_secret: str = attrs.field(repr=False)
    verification_token: str = attrs.field(repr=False)
    encrypt_key: str | None = attrs.field(default=None, repr=False)
    api_base: str = LARK_API
    common: Common = Common()


def _keys(secrets: tuple[str, ...], plain: tuple[str, ...]) -> set[str]:
    return {s + f for s in secrets for f in SECRET_FORMS} | set(plain) | set(COMMON)


def _check(table: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(table, key, "unknown key")


def _str(table: str, data: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(table, key, "required, a non-empty string")
    return value


def _secret(table: str, data: Mapping[str, Any], key: str, read: SecretReader,
            required: bool = True) -> str | None:
    given = [key + f for f in SECRET_FORMS if key + f in data]
    if len(given) > 1:
        raise ConfigError(table, key, "give one of " + ", ".join(given))
    if not given:
        if required:
            raise ConfigError(table, key, "required (inline, _file or _env)")
        return None
    try:
        value = read(data, key)
    except OSError as e:
        raise ConfigError(table, given[0], f"cannot be read ({e.strerror or type(e).__name__})") from None
    if not value:
        raise ConfigError(table, given[0], "is empty or unset")
    return value


def _api_base(table: str, data: Mapping[str, Any], default: str) -> str:
    base = _str(table, data, "api_base", required=False) or default
    if not base.startswith(("http://", "https://")):
        raise ConfigError(table, "api_base", "must be an http(s) URL")
    return base.rstrip("/")


def _common(table: str, data: Mapping[str, Any]) -> Common:
    out: dict[str, Any] = {}
    for key in ("intent", "fallback"):
        value = _str(table, data, key, required=False)
        if value is not None and not INTENT.fullmatch(value):
            raise ConfigError(table, key, "must be a program name")
        out[key] = value
    for key in ("unhandled_text", "busy_text"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(table, key, "must be a string")
        if value is not None:
            out[key] = value
    return Common(**out)


def _name(table: str, name: str) -> None:
    if not PART.fullmatch(name):
        raise ConfigError(table, None, "the app name must match [A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def wecom_app(name: str, data: Mapping[str, Any], read: SecretReader = inline_secret) -> WeComApp:
    table = f"wecom.{name}"
    _name(table, name)
    _check(table, data, _keys(("token", "encoding_aes_key", "secret"),
                              ("corp_id", "agent_id", "api_base")))
    agent = data.get("agent_id")
    if not isinstance(agent, int) or isinstance(agent, bool):
        raise ConfigError(table, "agent_id", "required, an integer")
    key = _secret(table, data, "encoding_aes_key", read) or ""
    try:
        decode_key(key)
    except ValueError as e:
        raise ConfigError(table, "encoding_aes_key", str(e)) from None
    return WeComApp(name=name, corp_id=_str(table, data, "corp_id") or "", agent_id=agent,
                    token=_secret(table, data, "token", read) or "", encoding_aes_key=key,
                    secret=_secret(table, data, "secret", read) or "",
                    api_base=_api_base(table, data, WECOM_API), common=_common(table, data))


def lark_app(name: str, data: Mapping[str, Any], read: SecretReader = inline_secret) -> LarkApp:
    table = f"lark.{name}"
    _name(table, name)
    _check(table, data, _keys(("app_secret", "verification_token", "encrypt_key"),
                              ("app_id", "api_base")))
    return LarkApp(name=name, app_id=_str(table, data, "app_id") or "",
                   app_secret=_secret(table, data, "app_secret", read) or "",
                   verification_token=_secret(table, data, "verification_token", read) or "",
                   encrypt_key=_secret(table, data, "encrypt_key", read, required=False),
                   api_base=_api_base(table, data, LARK_API), common=_common(table, data))
