"""The program library (docs/protocol.md §6): discovery and intent rules.

A program is ``<dir>/<name>/<name>.js`` with ``name`` a valid intent. Its
optional ``package.json`` may carry ``{"libchat": {"keywords": [...],
"patterns": [...], "warm": N, "description": "...", "runtime": "node"}}``
(``runtime``: which runtime starts it, default ``node``; a library told its
runtimes' names logs and skips a program naming another). Resolution order:
explicit intent, ``/name`` command prefix, patterns, keywords; programs are
tried in name order so the answer never depends on directory listing order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from libchat.protocol.events import valid_intent

DEFAULT_RUNTIME = "node"
COMMAND = re.compile(r"/([a-z0-9][a-z0-9_-]{0,63})(?=\s|$)")


@attrs.frozen
class Program:
    name: str
    directory: Path
    entry: Path
    description: str = ""
    keywords: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    warm: int | None = None
    runtime: str = DEFAULT_RUNTIME
    # the whole "libchat" section (a hosted agent's settings, docs/agents.md)
    section: dict[str, Any] = attrs.field(factory=dict, eq=False, hash=False, repr=False)


def read_program(directory: Path, log: Logger) -> Program | None:
    """A :class:`Program` for a directory, or None if it is not one."""
    name = directory.name
    entry = directory / f"{name}.js"
    manifest = directory / "package.json"
    if not valid_intent(name) or not (entry.is_file() or manifest.is_file()):
        return None
    rules: dict[str, Any] = {}
    if manifest.is_file():
        try:
            rules = json.loads(manifest.read_text("utf-8")).get("libchat") or {}
            if not isinstance(rules, dict):
                raise ValueError('"libchat" must be an object')
        except (ValueError, OSError, AttributeError) as e:
            log.error("program {program}: ignoring bad package.json: {error}",
                      program=name, error=str(e))
            rules = {}
    patterns = []
    for source in rules.get("patterns") or []:
        try:
            patterns.append(re.compile(str(source), re.IGNORECASE))
        except re.error as e:
            log.error("program {program}: ignoring bad pattern {pattern!r}: {error}",
                      program=name, pattern=source, error=str(e))
    warm = rules.get("warm")
    runtime = rules.get("runtime", DEFAULT_RUNTIME)
    if not isinstance(runtime, str) or not runtime:
        log.error("program {program}: ignoring it: \"runtime\" must be a name, not {value!r}",
                  program=name, value=runtime)
        return None
    if not entry.is_file():
        if runtime == DEFAULT_RUNTIME:
            return None  # a package.json alone is a program only for another runtime
        entry = manifest  # a hosted agent: its package.json is all there is
    return Program(
        name=name,
        directory=directory.resolve(),
        entry=entry.resolve(),
        description=str(rules.get("description") or ""),
        keywords=tuple(str(k).lower() for k in rules.get("keywords") or [] if str(k)),
        patterns=tuple(patterns),
        warm=int(warm) if isinstance(warm, int) and not isinstance(warm, bool) and warm >= 0
        else None,
        runtime=runtime,
        section=dict(rules),
    )


class ProgramLibrary:
    """Programs found under one or more directories (first one wins on a name).

    Lookups (:meth:`resolve`, :meth:`get`, :meth:`programs`) only read what
    the last scan found, so routing a message never touches the disk. The
    :meth:`rescanner` service scans every ``rescan`` seconds, so a program
    dropped into the library is picked up without a restart. A library that
    was never scanned scans once at its first lookup (tests, tools).
    """

    log = Logger()

    def __init__(self, directories: list[Path], now: Callable[[], float] | None = None,
                 rescan: float = 5.0) -> None:
        # ``now`` is accepted for callers written when lookups rescanned on
        # their own; the rescanner's clock decides when scans happen now.
        self.directories = [Path(d) for d in directories]
        self.rescan_interval = rescan
        self._programs: dict[str, Program] | None = None
        self._runtimes: frozenset[str] | None = None  # None: any
        self._refused: set[tuple[str, str]] = set()
        self._checks: dict[str, Callable[[Program], str | None]] = {}
        self._unavailable: dict[str, str] = {}

    def accept_runtimes(self, names: Any) -> None:
        """Only list programs whose runtime is one of ``names`` (set by the
        runtime switch); the others are logged once and never chosen."""
        self._runtimes = frozenset(names)
        # a runtime may check its programs (a hosted agent's key must be readable)
        table = names if isinstance(names, dict) else {}
        self._checks = {n: r.check for n, r in table.items()
                        if callable(getattr(r, "check", None))}
        self._programs = None  # the next lookup scans with the new rule

    def _accepted(self, program: Program) -> bool:
        if self._runtimes is not None and program.runtime not in self._runtimes:
            if (program.name, program.runtime) not in self._refused:
                self._refused.add((program.name, program.runtime))
                self.log.error("program {program}: unknown runtime {runtime!r} (known: "
                               "{known}); it is not served", program=program.name,
                               runtime=program.runtime, known=", ".join(sorted(self._runtimes)))
            return False
        check = self._checks.get(program.runtime)
        why = check(program) if check is not None else None
        if why is None:
            self._unavailable.pop(program.name, None)
            return True
        if self._unavailable.get(program.name) != why:  # one line per reason, not per scan
            self.log.error("program {program}: unavailable: {why}", program=program.name,
                           why=why)
        self._unavailable[program.name] = why
        return False

    def unavailable(self) -> dict[str, str]:
        """{program: why} for programs found but not served (never chosen)."""
        self.programs()
        return dict(self._unavailable)

    def scan(self) -> dict[str, Program]:
        """Read every directory now; a directory that cannot be read is logged
        and skipped (its programs are gone until it can be read again)."""
        found: dict[str, Program] = {}
        for base in self.directories:
            try:
                children = sorted(base.iterdir()) if base.is_dir() else []
            except OSError as e:
                self.log.error("program library: cannot read {directory}: {error}",
                               directory=str(base), error=e.strerror or str(e))
                continue
            for child in children:
                if child.name not in found and child.is_dir():
                    program = read_program(child, self.log)
                    if program is not None and self._accepted(program):
                        found[program.name] = program
        found = dict(sorted(found.items()))
        if self._programs is None or set(found) != set(self._programs):
            self.log.info("program library: {names}", names=", ".join(sorted(found)) or "(empty)")
        self._programs = found
        return found

    def rescanner(self, clock: IReactorTime) -> TimerService:
        """A service that scans at start and every ``rescan`` seconds after."""
        timer = TimerService(self.rescan_interval, self._scan_logged)
        timer.clock = clock
        return timer

    def _scan_logged(self) -> None:
        try:
            self.scan()
        except Exception:  # a LoopingCall that raises never runs again
            self.log.failure("program library: rescan failed")

    def programs(self) -> dict[str, Program]:
        if self._programs is None:
            self.scan()
        assert self._programs is not None
        return self._programs

    def get(self, name: str) -> Program | None:
        return self.programs().get(name)

    def resolve(self, content: str, intent: str | None = None) -> Program | None:
        """The program for a user message, or None (libchat answers 2003)."""
        programs = self.programs()
        if intent is not None:
            return programs.get(intent)
        command = COMMAND.match(content.lstrip())
        if command and command.group(1) in programs:
            return programs[command.group(1)]
        for program in programs.values():
            if any(p.search(content) for p in program.patterns):
                return program
        lowered = content.lower()
        for program in programs.values():
            if any(k in lowered for k in program.keywords):
                return program
        return None
