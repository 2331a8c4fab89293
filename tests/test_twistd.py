"""The server as operators run it: a real ``twistd`` subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ServerFactory

from libchat.tools.client import connect

from .helpers import BUNDLED, FIXTURES
from .serving import alive, message, wait_until
from .twistd_proc import Twistd, kill, start, stop

T = 20.0
LOCAL = "tcp:0:interface=127.0.0.1"


TAG = "LIBCHAT_TEST_TAG"  # in each test's twistd environment, so its programs' too


def node_children_of(dirs: list[Path], tag: Path) -> list[int]:
    """Pids of live processes running one of our programs (from their
    cmdline) started by this test's twistd (``TAG`` in their environment:
    another suite on the machine may run the same programs)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(d).encode() in part for part in cmd for d in dirs) \
                and needle in environ and alive(int(pid)):
            found.append(int(pid))
    return found


@defer.inlineCallbacks
def chat(port: int, content: str, **kw: Any) -> Any:
    c = yield connect(reactor, f"tcp:host=127.0.0.1:port={port}")
    try:
        c.send(message(content, **kw))
        event = yield c.next_event(reactor, T)
        # a restarted server first hands over what it kept for absent
        # upstreams (e.g. 2002 program_exited of dialogs of the killed run)
        while event.get("dialog_id") != kw.get("dialog_id", event.get("dialog_id")):
            event = yield c.next_event(reactor, T)
        return event
    finally:
        c.transport.loseConnection()
        yield c.closed


class Twistds:
    """Starts twistd subprocesses in one directory; each is stopped (and
    waited for) when the test ends."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[Twistd] = []

    def __call__(self, args: list[str], refused: bool = False) -> Twistd:
        """``refused``: the test expects it to end before it is ready.
        Its stderr is also kept apart (``errors``)."""
        p = start(args, self.cwd, env={**os.environ, TAG: str(self.cwd)}, stderr_apart=True)
        if refused:
            p.ready.addErrback(lambda _: None)
        self.started.append(p)
        return p

    def stop_all(self) -> Any:
        return defer.gatherResults([stop(p).addTimeout(T, reactor) for p in self.started])


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Twistds]:
    procs = Twistds(tmp_path)
    yield procs
    pytest_twisted.blockon(procs.stop_all())


def ready(p: Twistd) -> Any:
    """{role: port} once twistd said 'libchat ready' (fails if it ended first)."""
    return p.ready.addTimeout(T, reactor)


@pytest_twisted.inlineCallbacks
def test_readme_command_twistd_n_libchat_answers_a_1001(tmp_path: Path,
                                                        twistd: Twistds) -> Any:
    """Exactly `twistd -n libchat` in a directory holding ./programs (the README's
    quick start): default ports, ./data created, hello answers."""
    (tmp_path / "programs").symlink_to(BUNDLED)
    p = twistd(["-n", "libchat"])
    ports = yield ready(p)
    assert ports["front"] == 8082 and ports["api"] == 8083
    reply = yield chat(8082, "hello", dialog_id="readme", user_id="newcomer")
    assert reply["event_type"] == 2001 and "name" in reply["messages"]["content"]
    kill(p)
    yield p.ended.addTimeout(T, reactor)
    assert json.loads((tmp_path / "data" / "readme.json").read_text())["program"] == "hello"
    assert node_children_of([BUNDLED], tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_daemonized_twistd_with_pidfile_and_logfile(tmp_path: Path, twistd: Twistds) -> Any:
    pidfile, logfile = tmp_path / "libchat.pid", tmp_path / "libchat.log"
    args = ["--pidfile", str(pidfile), "--logfile", str(logfile), "libchat",
            "--front", LOCAL, "--api", LOCAL, "--web", LOCAL,
            "--programs", str(FIXTURES), "--data", str(tmp_path / "data")]
    launcher = twistd(args, refused=True)  # the launcher never logs "ready" itself
    yield launcher.ended.addTimeout(T, reactor)  # the launcher exits; the daemon lives
    yield wait_until(lambda: pidfile.exists() and b"libchat ready" in logfile.read_bytes(), T)
    pid = int(pidfile.read_text())
    try:
        ports = dict(re.findall(r"libchat (\w+) listening on [\d.]+:(\d+)",
                                logfile.read_text()))
        reply = yield chat(int(ports["front"]), "x", intent="pid")
        child = json.loads(reply["messages"]["content"])["pid"]
        os.kill(pid, signal.SIGTERM)
        yield wait_until(lambda: not alive(pid), T)
        assert not alive(child) and not pidfile.exists()
        assert "libchat stopped" in logfile.read_text()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest_twisted.inlineCallbacks
def test_memory_survives_a_twistd_restart(tmp_path: Path, twistd: Twistds) -> Any:
    args = ["-n", "--pidfile=", "libchat", "--front", LOCAL, "--api", LOCAL, "--web", LOCAL,
            "--programs", str(FIXTURES), "--data", str(tmp_path / "data")]
    first = twistd(args)
    ports = yield ready(first)
    saved = yield chat(ports["front"], "set k v1", dialog_id="one", intent="memory")
    assert saved["messages"]["content"] == "saved k"
    kill(first)
    yield first.ended.addTimeout(T, reactor)
    second = twistd(args)
    ports = yield ready(second)
    got = yield chat(ports["front"], "get k", dialog_id="two", intent="memory")
    assert json.loads(got["messages"]["content"]) == "v1"


# -- start-up errors: one line on stderr that says what to change ---------------


def refusal(p: Twistd) -> str:
    """The one line a refusing twistd wrote on stderr (it must have ended)."""
    lines = p.errors.decode(errors="replace").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{p.errors.decode()}"
    return lines[0]


@pytest_twisted.inlineCallbacks
def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path: Path,
                                                          twistd: Twistds) -> Any:
    p = twistd(["-n", "--pidfile=", "libchat", "--programs", str(FIXTURES),
                "--magic", "banana"], refused=True)
    code = yield p.ended.addTimeout(T, reactor)
    assert code.exitCode != 0
    line = refusal(p)
    assert line.startswith("libchat: --magic must be an integer") and "'banana'" in line


@pytest_twisted.inlineCallbacks
def test_a_busy_port_is_one_line_naming_the_option(tmp_path: Path, twistd: Twistds) -> Any:
    taken: Any = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
    try:
        p = twistd(["-n", "--pidfile=", "libchat", "--front", busy, "--api", LOCAL,
                    "--web", LOCAL, "--programs", str(FIXTURES), "--data", str(tmp_path / "d")],
                   refused=True)
        code = yield p.ended.addTimeout(T, reactor)
    finally:
        yield taken.stopListening()
    assert code.exitCode != 0
    assert refusal(p) == (f"libchat: cannot listen on {busy} for --front: address already "
                          "in use; choose another with --front")
    assert b"Traceback" not in p.output


@pytest_twisted.inlineCallbacks
def test_a_missing_programs_dir_is_one_line(tmp_path: Path, twistd: Twistds) -> Any:
    p = twistd(["-n", "--pidfile=", "libchat", "--data", str(tmp_path / "d")], refused=True)
    code = yield p.ended.addTimeout(T, reactor)
    assert code.exitCode != 0
    assert refusal(p).startswith("libchat: --programs: ./programs does not exist; "
                                 "create it or choose another with --programs")


@pytest_twisted.inlineCallbacks
def test_a_programs_path_that_is_a_file_is_one_line(tmp_path: Path, twistd: Twistds) -> Any:
    (tmp_path / "progs").write_text("not a directory")
    p = twistd(["-n", "--pidfile=", "libchat", "--programs", "progs"], refused=True)
    code = yield p.ended.addTimeout(T, reactor)
    assert code.exitCode != 0
    assert "--programs: progs is not a directory" in refusal(p)


@pytest_twisted.inlineCallbacks
def test_a_bad_config_file_is_one_line_naming_file_table_and_key(tmp_path: Path,
                                                                 twistd: Twistds) -> Any:
    path = tmp_path / "libchat.toml"
    path.write_text('programs = "%s"\nidle_timeout = 60\n' % FIXTURES)
    p = twistd(["-n", "--pidfile=", "libchat", "--config", str(path)], refused=True)
    code = yield p.ended.addTimeout(T, reactor)
    assert code.exitCode != 0
    line = refusal(p)
    assert str(path) in line and "top level" in line and "'idle_timeout'" in line
    assert "did you mean 'idle-timeout'" in line


@pytest_twisted.inlineCallbacks
def test_a_config_file_configures_twistd(tmp_path: Path, twistd: Twistds) -> Any:
    """Every value from the file; the command line's --data wins over the file's."""
    path = tmp_path / "libchat.toml"
    path.write_text("\n".join([
        f'front = ["{LOCAL}"]', f'api = "{LOCAL}"', f'web = "{LOCAL}"',
        f'programs = "{FIXTURES}"', 'data = "from-file"', "idle-timeout = 60",
        'auth-secret-env = "LIBCHAT_TEST_SECRET"', ""]))
    os.environ["LIBCHAT_TEST_SECRET"] = "s" * 40  # start() copies os.environ
    try:
        p = twistd(["-n", "--pidfile=", "libchat", "--config", str(path),
                    "--data", "from-command-line"])
    finally:
        del os.environ["LIBCHAT_TEST_SECRET"]
    ports = yield ready(p)
    reply = yield chat(ports["front"], "x", intent="pid", dialog_id="cfg")
    assert reply["event_type"] == 2001
    assert b"DEVELOPMENT MODE" not in p.output and b"s" * 40 not in p.output
    yield stop(p).addTimeout(T, reactor)
    assert (tmp_path / "from-command-line" / "cfg.json").exists()
    assert not (tmp_path / "from-file").exists()


@pytest_twisted.inlineCallbacks
def test_an_endpoint_that_is_not_one_is_one_line(tmp_path: Path, twistd: Twistds) -> Any:
    p = twistd(["-n", "--pidfile=", "libchat", "--programs", str(FIXTURES),
                "--front", "banana:8082"], refused=True)
    code = yield p.ended.addTimeout(T, reactor)
    assert code.exitCode != 0
    line = refusal(p)
    assert line.startswith("libchat: --front 'banana:8082' is not a Twisted endpoint")
