"""``--config FILE``: a TOML file checked against declared tables.

Each door or runtime declares the table it reads next to its own code, as a
:class:`Table` of :class:`Key` s, and registers it with :func:`register`;
``tap.py`` declares the top level (every command-line option under its long
name). :func:`load` reads the file and checks every value against those
declarations, so a typo is a refusal at start, never a silently ignored key.
Every refusal is one :class:`ConfigError` line naming the file, the table and
the key. Secret values are wrapped in :class:`Secret` as soon as they are
read and never appear in an error message or a log.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from twisted.python import usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ConfigError(usage.UsageError):
    """The file cannot be used; the message is one line that says where and why."""


@attrs.frozen(repr=False)
class Secret:
    """A secret value: shown as ``***`` everywhere; :meth:`reveal` to use it."""

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@attrs.frozen
class Key:
    """One key of a table.

    ``kind`` is the TOML type (``str``, ``int``, ``float`` (an integer is
    accepted too), ``bool``, ``list`` of ``items``, or a tuple of those).
    ``coerce`` validates and converts the value after the type check; it
    raises ``ValueError`` or ``usage.UsageError`` with a message. A ``secret``
    key may also be given as ``<name>_file`` (the file's content, stripped)
    or ``<name>_env`` (an environment variable); ``-`` instead of ``_`` for a
    dashed name (``auth-secret-file``). Its value is a :class:`Secret`.
    """

    name: str
    kind: Any = str
    required: bool = False
    default: Any = None
    secret: bool = False
    coerce: Callable[[Any], Any] | None = None
    items: type | None = None
    help: str = ""

    def forms(self) -> tuple[str, str, str]:
        """The inline, file and environment spellings of a secret key."""
        sep = "-" if "-" in self.name else "_"
        return self.name, f"{self.name}{sep}file", f"{self.name}{sep}env"


@attrs.frozen
class Table:
    """A TOML table: its keys and the tables nested in it.

    A ``named`` table is a family (``[wecom.NAME]``): each sub-table is one
    instance, checked against the same keys, its name matching :data:`NAME`.
    """

    name: str
    keys: tuple[Key, ...] = ()
    tables: tuple[Table, ...] = ()
    named: bool = False
    help: str = ""


TABLES: dict[str, Table] = {}


def register(table: Table) -> Table:
    """Make ``[table.name]`` a known top-level table (call at import time)."""
    if table.name in TABLES and TABLES[table.name] != table:
        raise ValueError(f"config table [{table.name}] is registered twice")
    TABLES[table.name] = table
    return table


@attrs.frozen
class Config:
    """What a file said: the top-level keys it set (defaults are the command
    line's) and each table it holds, checked, defaults filled in. A table
    absent from the file is absent here (``tables.get(name)``)."""

    path: str
    top: dict[str, Any]
    tables: dict[str, Any]


def load(path: str | os.PathLike[str], top: Table,
         tables: Mapping[str, Table] | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    """Read and check ``path``: ``top``'s keys at the top level, the
    registered tables (or ``tables``) below it."""
    shown = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {shown}: {e.strerror or e}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {shown} is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {shown} is not valid TOML: {e}") from None
    known = TABLES if tables is None else tables
    root = attrs.evolve(top, tables=tuple(top.tables) + tuple(known.values()))
    checker = _Checker(shown, os.environ if env is None else env)
    values = checker.table(root, document, None, defaults=False)
    nested = {t.name for t in root.tables}
    return Config(path=shown,
                  top={k: v for k, v in values.items() if k not in nested},
                  tables={k: v for k, v in values.items() if k in nested})


@attrs.frozen
class _Checker:
    path: str
    env: Mapping[str, str]

    def fail(self, where: str | None, key: str | None, problem: str) -> ConfigError:
        place = "top level" if where is None else f"table [{where}]"
        spot = f"{place}, key {key!r}" if key is not None else place
        return ConfigError(f"config file {self.path}: {spot}: {problem}")

    def table(self, table: Table, values: Any, where: str | None,
              defaults: bool = True) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise self.fail(where, None, "must be a table")
        if table.named:
            out: dict[str, Any] = {}
            for name, sub in values.items():
                label = f"{where}.{name}"
                if not NAME.match(name):
                    raise self.fail(label, None, "a name of letters, digits, '_' and '-' "
                                                 "(64 at most) is expected")
                out[name] = self.table(attrs.evolve(table, named=False), sub, label)
            return out
        return self.keys(table, values, where, defaults)

    def keys(self, table: Table, values: dict[str, Any], where: str | None,
             defaults: bool) -> dict[str, Any]:
        subtables = {t.name: t for t in table.tables}
        spellings: dict[str, Key] = {}
        for key in table.keys:
            for form in key.forms() if key.secret else (key.name,):
                spellings[form] = key
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name in subtables:
                label = name if where is None else f"{where}.{name}"
                out[name] = self.table(subtables[name], value, label)
            elif name not in spellings:
                near = difflib.get_close_matches(name, [*spellings, *subtables], n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise self.fail(where, name, f"unknown key{hint}")
        for key in table.keys:
            given = [f for f in (key.forms() if key.secret else (key.name,)) if f in values]
            if len(given) > 1:
                raise self.fail(where, given[1], f"give only one of {', '.join(given)}")
            if given:
                out[key.name] = self.value(key, given[0], values[given[0]], where)
            elif key.required:
                forms = " or ".join(repr(f) for f in key.forms()) if key.secret else None
                raise self.fail(where, key.name, "required but missing"
                                + (f" (give {forms})" if forms else ""))
            elif defaults:
                out[key.name] = key.default
        return out

    def value(self, key: Key, form: str, value: Any, where: str | None) -> Any:
        if key.secret:
            return Secret(self.secret(key, form, value, where))
        if not _is(value, key.kind):
            raise self.fail(where, form, f"must be {_describe(key.kind)}, not "
                                         f"{_toml_type(value)}")
        if isinstance(value, list) and key.items is not None:
            for item in value:
                if not _is(item, key.items):
                    raise self.fail(where, form, "must be a list of "
                                                 + _PLURALS.get(key.items, key.items.__name__))
        if key.coerce is None:
            return value
        try:
            return key.coerce(value)
        except (ValueError, TypeError, usage.UsageError) as e:
            problem = str(e)
            for prefix in (f"--{key.name} ", f"{key.name} "):
                problem = problem.removeprefix(prefix)
            raise self.fail(where, form, problem) from None

    def secret(self, key: Key, form: str, value: Any, where: str | None) -> str:
        inline, from_file, from_env = key.forms()
        if not isinstance(value, str):
            raise self.fail(where, form, f"must be a string, not {_toml_type(value)}")
        if form == from_file:
            try:
                value = Path(value).read_text("utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                reason = getattr(e, "strerror", None) or type(e).__name__
                raise self.fail(where, form, f"cannot read secret file {value}: {reason}") \
                    from None
            if not value:
                raise self.fail(where, form, "the secret file is empty")
        elif form == from_env:
            name = value
            value = self.env.get(name, "")
            if not value:
                raise self.fail(where, form, f"environment variable {name} is not set "
                                             "or empty")
        elif not value:
            raise self.fail(where, inline, "must not be empty")
        if key.coerce is not None:
            try:
                value = key.coerce(value)
            except (ValueError, TypeError, usage.UsageError):
                # the reason could quote the secret: say only which rule
                raise self.fail(where, form, f"not a valid {key.name}"
                                + (f" ({key.help})" if key.help else "")) from None
        return str(value)


def _is(value: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, tuple(k for k in kinds if k is not bool))


_PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          list: "a list", dict: "a table"}


def _describe(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)


def _toml_type(value: Any) -> str:
    for kind in (bool, int, float, str, list, dict):
        if isinstance(value, kind):
            return _NAMES[kind] if kind is not bool else "a boolean"
    return "a date or time"
