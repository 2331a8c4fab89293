"""A hosted agent program's ``package.json`` section, checked (docs/agents.md).

:func:`agent_settings` turns the ``"libchat"`` object into an
:class:`AgentSettings` or raises :class:`Unavailable` with a reason fit for
a log line. The reason names keys, files and variables, never a key's value:
the API key itself only lives in ``AgentSettings.api_key`` (whose ``repr``
hides it) and in the ``Authorization`` header.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import attrs

COMMON = {"runtime", "keywords", "patterns", "description", "warm", "base_url", "api_key",
          "api_key_file", "api_key_env", "timeout", "max_concurrency", "single_turn"}
KEYS = {"dify": COMMON | {"response_mode", "inputs"},
        "coze": COMMON | {"bot_id", "stream", "poll_timeout"}}
DEFAULT_TIMEOUT = 100.0
DEFAULT_CONCURRENCY = 16
DEFAULT_URL = {"dify": "https://api.dify.ai/v1", "coze": "https://api.coze.com"}


class Unavailable(Exception):
    """The program cannot be served; the message says why (no secret in it)."""


@attrs.frozen
class AgentSettings:
    runtime: str
    section: dict[str, Any] = attrs.field(eq=False, hash=False)  # as given (key included)
    api_key: str = attrs.field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_concurrency: int = DEFAULT_CONCURRENCY
    single_turn: bool = False


def read_key(section: Mapping[str, Any], base: Path,
             env: Mapping[str, str] | None = None) -> str:
    """The API key from exactly one of ``api_key``, ``api_key_file`` (relative
    to the program directory) and ``api_key_env``."""
    env = os.environ if env is None else env
    given = [k for k in ("api_key", "api_key_file", "api_key_env") if k in section]
    if len(given) != 1:
        raise Unavailable("needs exactly one of api_key, api_key_file, api_key_env"
                          + (f" (has {', '.join(given)})" if given else ""))
    form = given[0]
    value = section[form]
    if not isinstance(value, str) or not value:
        raise Unavailable(f"{form} must be a non-empty string")
    if form == "api_key_file":
        path = base / value
        try:
            key = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise Unavailable(f"cannot read api_key_file {path}: "
                              f"{getattr(e, 'strerror', None) or type(e).__name__}") from None
        if not key:
            raise Unavailable(f"api_key_file {path} is empty")
    elif form == "api_key_env":
        key = env.get(value, "")
        if not key:
            raise Unavailable(f"environment variable {value} (api_key_env) is not set or empty")
    else:
        key = value
    if any(c in key for c in "\r\n\0"):
        raise Unavailable(f"the key from {form} holds a line break or NUL")
    return key


def _number(section: Mapping[str, Any], name: str, default: float, integer: bool) -> Any:
    value = section.get(name, default)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise Unavailable(f"{name} must be a positive {'integer' if integer else 'number'}")
    return value


def agent_settings(runtime: str, section: Mapping[str, Any], base: Path,
                   env: Mapping[str, str] | None = None) -> AgentSettings:
    unknown = sorted(set(section) - KEYS.get(runtime, COMMON))
    if unknown:
        raise Unavailable(f"unknown key(s) for a {runtime} program: {', '.join(unknown)}")
    url = section.get("base_url", DEFAULT_URL.get(runtime))
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Unavailable("base_url must be an http:// or https:// URL")
    if runtime == "dify":
        if section.get("response_mode", "streaming") not in ("streaming", "blocking"):
            raise Unavailable('response_mode must be "streaming" or "blocking"')
        if not isinstance(section.get("inputs", {}), dict):
            raise Unavailable("inputs must be an object")
    if runtime == "coze":
        if not isinstance(section.get("bot_id"), str) or not section.get("bot_id"):
            raise Unavailable("bot_id must be a non-empty string")
        if not isinstance(section.get("stream", True), bool):
            raise Unavailable("stream must be true or false")
        _number(section, "poll_timeout", 300.0, False)
    single = section.get("single_turn", False)
    if not isinstance(single, bool):
        raise Unavailable("single_turn must be true or false")
    timeout = float(_number(section, "timeout", DEFAULT_TIMEOUT, False))
    concurrency = int(_number(section, "max_concurrency", DEFAULT_CONCURRENCY, True))
    key = read_key(section, base, env)
    return AgentSettings(runtime=runtime, section={**section, "base_url": url.rstrip("/")},
                         api_key=key, timeout=timeout, max_concurrency=concurrency,
                         single_turn=single)
