"""The options of ``twistd libchat`` (the README's options), and ``--config``.

A bad value is a :class:`usage.UsageError` naming the option; under twistd
(:class:`TwistdOptions`) it is one line on stderr, as is a
:class:`StartupError` raised later while the service starts (a busy port).
The config file's top level is derived from the options here
(:func:`top_table`), so a key and its option never disagree.
"""

from __future__ import annotations

import os
import re
import sys
from types import TracebackType
from typing import Any, Callable

from twisted.python import usage

from libchat import config
from libchat.errors import StartupError
from libchat.doors.platforms import tables as platform_tables
from libchat.doors.postoffice import settings as postoffice_settings
from libchat.doors.web.auth import read_secret
from libchat.protocol.wire import DEFAULT_MAX_FRAME, MAGIC
from libchat.runtimes.node.reaper import MAX_RUNTIME_BASE

# the door and runtime tables the config file may hold (registered on import)
DOOR_TABLES = (platform_tables.WECOM, platform_tables.LARK, postoffice_settings.TABLE)

DEFAULT_FRONT = "tcp:8082:interface=127.0.0.1"
DEFAULT_API = "tcp:8083:interface=127.0.0.1"
DEFAULT_WEB = "tcp:8080:interface=127.0.0.1"


def _positive(kind: Callable[[str], Any], name: str, minimum: float = 0) -> Callable[[str], Any]:
    def coerce(value: str) -> Any:
        try:
            v = kind(value)
        except ValueError:
            raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
        if v < minimum:
            raise usage.UsageError(f"--{name} must be at least {minimum}")
        return v
    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def _magic(value: str) -> int:
    try:
        v = int(value, 0)
    except ValueError:
        raise usage.UsageError(f"--magic must be an integer (decimal or 0x hex), "
                               f"not {value!r}") from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise usage.UsageError("--magic must fit in 32 bits")
    return v


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run libchat: a chat router that binds each dialog to its own "
                "Node.js tool program. Endpoints are Twisted endpoint strings.")

    optParameters = [
        ["config", None, None, "TOML file of options and tables (docs/configuration.md); "
         "the command line wins over it."],
        ["api", None, DEFAULT_API, "Memory API endpoint (for programs)."],
        ["programs", None, "./programs", "Program library directory (several: "
         "separate them with ':'; the first holding a name wins)."],
        ["data", None, "./data", "Directory of <dialog_id>.json files."],
        ["node", None, "node", "Node.js executable."],
        ["idle-timeout", None, 3600.0, "Seconds without a user message before a "
         "foreground program is stopped.", _positive(float, "idle-timeout", 0.001)],
        ["flush-interval", None, 5.0, "Seconds between writes of changed dialogs.",
         _positive(float, "flush-interval", 0.001)],
        ["max-programs", None, 256, "Live instances at most (foreground and background).",
         _positive(int, "max-programs", 1)],
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame body in bytes.",
         _positive(int, "max-frame", 1)],
        ["start-timeout", None, 10.0, "Seconds a program has to connect to its socket.",
         _positive(float, "start-timeout", 0.001)],
        ["kill-grace", None, 5.0, "Seconds between SIGTERM and SIGKILL.",
         _positive(float, "kill-grace", 0)],
        ["magic", None, MAGIC, "Frame magic number (decimal or 0x hex).", _magic],
        ["background-limit", None, 3600.0, "Seconds a program may keep running in the "
         "background after its 2002 (0: no limit).", _positive(float, "background-limit", 0)],
        ["frame-timeout", None, 30.0, "Seconds a front connection may leave a frame "
         "incomplete before it is closed (0: never).", _positive(float, "frame-timeout", 0)],
        ["warm", None, 0, "Instances per program started ahead of need (a program's "
         'package.json "libchat": {"warm": N} overrides it).', _positive(int, "warm", 0)],
        ["spawn-concurrency", None, 4, "Program instances booting at once at most; "
         "more wait their turn so a spawn storm never stalls routing (0: no limit).",
         _positive(int, "spawn-concurrency", 0)],
        ["runtime-dir", None, None, "Parent of the private socket directory "
         "(default $XDG_RUNTIME_DIR or /tmp)."],
        # the web front doors (docs/web.md; libchat.doors.web, docs/web.md)
        ["web", None, DEFAULT_WEB, "Web endpoint: page, /ws, REST API, /metrics, /healthz."],
        ["auth-secret", None, None, "HS256 secret for user JWTs (none: development mode)."],
        # the post-office hub (CONTRACT section 12; libchat.doors.postoffice)
        ["postoffice", None, None, "Post-office hub endpoint (off by default; docs/postoffice.md)."],
        ["auth-secret-file", None, None, "File holding the JWT secret."],
        ["ws-rate", None, 20.0, "Messages per second one WebSocket (or REST user) may send.",
         _positive(float, "ws-rate", 0.001)],
        ["ws-max-per-user", None, 16, "Open WebSockets per user at most.",
         _positive(int, "ws-max-per-user", 1)],
        # autobahn's timers have a resolution of one second
        ["ws-ping", None, 25.0, "Seconds between WebSocket pings.",
         _positive(float, "ws-ping", 1)],
        ["ws-pong", None, 10.0, "Seconds a WebSocket has to answer a ping.",
         _positive(float, "ws-pong", 1)],
        # several nodes over one Redis (CONTRACT section 14; docs/scaleout.md)
        ["redis", None, None, "Redis endpoint shared by the nodes of a cluster "
         "(tcp:host=H:port=P or unix:path=...; off by default: one node, JSON files)."],
        ["redis-password-file", None, None, "File whose first line is the Redis password."],
        ["node-id", None, None, "This node's name in the cluster (default host-pid-random)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["front"] = []
        self.given: set[str] = set()  # the options named on the command line
        self.tables: dict[str, Any] = {}  # the config file's tables (libchat.config)
        # note each option the command line sets, so the config file never
        # overrides one (usage.Options has no public hook for this)
        wrapped: set[int] = set()
        for handler in self._dispatch.values():
            if isinstance(handler, usage.CoerceParameter) and id(handler) not in wrapped:
                wrapped.add(id(handler))
                handler.dispatch = self._noting(handler.dispatch)  # type: ignore[method-assign]

    def _noting(self, dispatch: Callable[[str, str], None]) -> Callable[[str, str], None]:
        def noted(name: str, value: str) -> None:
            self.given.add(name)
            dispatch(name, value)
        return noted

    def opt_front(self, endpoint: str) -> None:
        """Front-service endpoint (repeatable). Default: tcp:8082:interface=127.0.0.1"""
        self.given.add("front")
        self["front"].append(endpoint)

    def postOptions(self) -> None:
        secret: bytes | None = None
        if self["config"] is not None:
            secret = self._apply(config.load(self["config"], top_table()))
        if not self["front"]:
            self["front"] = [DEFAULT_FRONT]
        base = self["runtime-dir"]
        if base is not None and len(os.fsencode(base)) > MAX_RUNTIME_BASE:
            raise usage.UsageError(f"--runtime-dir must be at most {MAX_RUNTIME_BASE} bytes "
                                   "(Unix socket paths are limited to 108)")
        for directory in self["programs"].split(os.pathsep):
            check_programs_dir(directory)
        try:
            self["secret"] = secret or read_secret(self["auth-secret"], self["auth-secret-file"])
        except (OSError, ValueError) as e:
            raise usage.UsageError(str(e)) from None
        self._cluster()

    def _cluster(self) -> None:
        """--redis, --redis-password-file, --node-id (docs/scaleout.md)."""
        self["redis-password"] = None
        if self["redis"] is None:
            for name in ("redis-password-file", "node-id"):
                if self[name] is not None:
                    raise usage.UsageError(f"--{name} needs --redis")
            return
        from libchat.cluster.connect import parse_redis, read_password_file
        try:
            parse_redis(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        if self["redis-password-file"] is not None:
            try:
                self["redis-password"] = read_password_file(self["redis-password-file"])
            except StartupError as e:
                raise usage.UsageError(str(e).removeprefix("libchat: ")) from None
        node_id = self["node-id"]
        if node_id is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", node_id):
            raise usage.UsageError("--node-id must match [A-Za-z0-9._-]{1,64}")

    def _apply(self, found: config.Config) -> bytes | None:
        """Take the file's values for what the command line left unset; the
        file's JWT secret (none if the command line names one)."""
        secret = None
        for name, value in found.top.items():
            if name == "auth-secret":
                if not self.given & {"auth-secret", "auth-secret-file"}:
                    secret = value.reveal().encode("utf-8")
            elif name not in self.given:
                self[name] = value
        self.tables = found.tables
        return secret


class TwistdOptions(Options):
    """The options as twistd parses them: a bad value is one line on stderr
    and exit status 2, not twistd's whole usage text; a :class:`StartupError`
    later (a busy port) is one line too."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            write_line(f"libchat: {e} (see twistd libchat --help)")
            raise SystemExit(2) from None
        sys.excepthook = one_line_startup_errors(sys.excepthook)


def write_line(line: str) -> None:
    # twistd redirects sys.stderr into its log once logging begins
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()


def one_line_startup_errors(hook: Any) -> Any:
    def excepthook(kind: type[BaseException], value: BaseException,
                   tb: TracebackType | None) -> None:
        if isinstance(value, StartupError):
            write_line(str(value))
        else:
            hook(kind, value, tb)
    return excepthook


def check_programs_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise usage.UsageError(f"--programs: {directory} {what}; create it or choose "
                               "another with --programs")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise usage.UsageError(f"--programs: cannot read {directory} (permission denied); "
                               "fix its permissions or choose another with --programs")


def _on_text(coerce: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A command-line coercion applied to a file value (it takes text)."""
    return lambda value: coerce(str(value))


def top_table() -> config.Table:
    """The config file's top level: every option under its long name."""
    keys = [config.Key("front", kind=(list, str), items=str,
                       coerce=lambda v: [v] if isinstance(v, str) else list(v),
                       default=[DEFAULT_FRONT], help="Front-service endpoints.")]
    parameters: list[list[Any]] = Options.optParameters  # type: ignore[assignment]
    for name, _short, default, doc, *coerce in parameters:
        if name in ("config", "auth-secret-file", "postoffice"):  # [postoffice] is a table
            continue  # auth-secret-file is the secret's _file form below
        if name == "auth-secret":
            keys.append(config.Key(name, secret=True, help=doc))
            continue
        kind: Any = ((int, str) if name == "magic" else float if isinstance(default, float)
                     else int if isinstance(default, int) else str)
        check: Callable[[str], Any] | None = coerce[0] if coerce else None
        keys.append(config.Key(name, kind=kind, default=default, help=doc,
                               coerce=_on_text(check) if check else None))
    return config.Table("", keys=tuple(keys))
