"""What every test gets: the log check, and trial-style cases in a tmp dir.

pytest (with pytest-twisted for anything asynchronous) is the one runner.
Twisted's trial no longer runs this suite: it never collected the pytest-style
half, and the old bridge that let async trial cases share pytest-twisted's
reactor replaced trial's private ``TestCase._wait`` for the whole process
(dropping its reentrancy guard and ``reactor.stop`` protection). Asynchronous
tests are pytest functions (``@pytest_twisted.inlineCallbacks`` /
``ensureDeferred``); synchronous trial ``SynchronousTestCase`` classes remain
welcome, pytest runs them natively.

- Working directory: a trial case's ``self.mktemp()`` is relative to the
  working directory, so each trial case runs in its own ``tmp_path``.
- Artefacts: no test may leave a file in the checkout (only in tmp dirs or the
  git-ignored ``tests/artifacts/``); the session fails if one appears.
- The log check: plain tests get the autouse ``logged`` fixture, trial cases
  mix in ``tests.logcheck.LogCheckMixin``; both fail a test that logged an
  error it did not allow.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.launcher import ROOT


def _untracked() -> set[str] | None:
    """Untracked, not ignored files of the checkout (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.splitlines())


@pytest.fixture(scope="module")
def redis() -> Iterator[Any]:
    """A redis-server of the test module's own, shared by its tests (the
    several-nodes modules start their twistd nodes on it); stopped and its
    directory removed after the module."""
    from tests.cluster.nodes import private_redis
    with private_redis() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def _no_artefacts_in_the_checkout() -> Iterator[None]:
    before = _untracked()
    yield
    after = _untracked()
    if before is not None and after is not None and after - before:
        pytest.fail("tests left files in the checkout (write to tmp_path or tests/artifacts/): "
                    + ", ".join(sorted(after - before)[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def _trial_cases_in_tmp_path(request: pytest.FixtureRequest, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(request.instance, SynchronousTestCase):
        monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def logged(request: pytest.FixtureRequest) -> Any:
    """The log check for plain pytest tests (trial cases mix in LogCheckMixin):
    the test fails if it logged an error it did not ``logged.allow(text)``."""
    from twisted.logger import globalLogPublisher

    from tests.logcheck import LogCapture

    if isinstance(request.instance, SynchronousTestCase):
        yield None
        return
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)
    errors = capture.errors()
    if errors:
        pytest.fail(capture.report(errors))
