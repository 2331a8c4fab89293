"""The ``[wecom.NAME]`` and ``[lark.NAME]`` tables, declared to the section 9 loader.

:mod:`libchat.config` checks types, unknown keys and the three secret forms
(and names the file, the table and the key when it refuses); the platform
rules (the 43-character key, program names, URLs) are
:mod:`libchat.doors.platforms.config`'s, applied by :func:`apps` at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from libchat import config

from . import config as pconfig

COMMON = (config.Key("intent"), config.Key("fallback"), config.Key("unhandled_text"),
          config.Key("busy_text"), config.Key("api_base"))

WECOM = config.register(config.Table("wecom", named=True, keys=(
    config.Key("corp_id", required=True), config.Key("agent_id", kind=int, required=True),
    config.Key("token", secret=True, required=True),
    config.Key("encoding_aes_key", secret=True, required=True, help="43 characters"),
    config.Key("secret", secret=True, required=True), *COMMON)))

LARK = config.register(config.Table("lark", named=True, keys=(
    config.Key("app_id", required=True), config.Key("app_secret", secret=True, required=True),
    config.Key("verification_token", secret=True, required=True),
    config.Key("encrypt_key", secret=True), *COMMON)))


def _reveal(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value.reveal() if isinstance(value, config.Secret) else value


def apps(tables: Mapping[str, Any], path: str = "config file"
         ) -> tuple[list[pconfig.WeComApp], list[pconfig.LarkApp]]:
    """The configured apps, or the one-line :class:`libchat.config.ConfigError`."""
    try:
        wecom = [pconfig.wecom_app(name, _given(t), _reveal)
                 for name, t in sorted(tables.get("wecom", {}).items())]
        lark = [pconfig.lark_app(name, _given(t), _reveal)
                for name, t in sorted(tables.get("lark", {}).items())]
    except pconfig.ConfigError as e:
        raise config.ConfigError(f"config file {path}: {e}") from None
    return wecom, lark


def _given(table: Mapping[str, Any]) -> dict[str, Any]:
    """The keys the file set (the loader fills absent ones with None)."""
    return {k: v for k, v in table.items() if v is not None}
