"""What pytest alone needs to run the trial test cases the way trial does.

The tests are ``twisted.trial`` test cases (trial runs them too); the log check
lives in ``tests/logcheck.py``. Two differences between the runners remain:

- Working directory: trial runs in ``_trial_temp``, so ``self.mktemp()`` paths
  land there. Under pytest each trial case runs in its own ``tmp_path`` instead
  of the checkout.
- The reactor: pytest-twisted runs the reactor in a greenlet. Once a
  pytest-twisted test has started it, the reactor counts as running and trial's
  own ``TestCase._wait`` (which calls ``reactor.run()``) breaks every later
  Deferred-returning trial test (DirtyReactorAggregateError). Under pytest-twisted,
  trial cases therefore wait by switching to that greenlet (``blockon``), so both
  kinds of tests can share one session in any order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.trial import _asynctest
from twisted.trial.unittest import SynchronousTestCase

try:
    import pytest_twisted
except ImportError:  # pragma: no cover - pytest-twisted is a test requirement
    pytest_twisted = None

_trial_wait = _asynctest.TestCase._wait


def _wait_in_pytest_twisted_greenlet(self: Any, d: defer.Deferred[Any], *a: Any) -> None:
    """Wait for trial's test Deferred (which only ever callbacks: trial's own
    callbacks on it record the outcome) on pytest-twisted's reactor greenlet.

    The switch back happens from a fresh ``callLater(0)``, never from inside
    whatever callback fired ``d``: trial's janitor then iterates the reactor
    from this greenlet, and an iteration suspended half-way (say, through the
    queue of calls from threads) would otherwise run those calls twice.
    """
    if pytest_twisted is None or pytest_twisted._instances.gr_twisted is None:
        return _trial_wait(self, d, *a)
    from twisted.internet import reactor
    done: defer.Deferred[None] = defer.Deferred()
    d.addBoth(lambda _: reactor.callLater(0, done.callback, None))
    pytest_twisted.blockon(done)


_asynctest.TestCase._wait = _wait_in_pytest_twisted_greenlet


@pytest.fixture(autouse=True)
def _trial_cases_in_tmp_path(request: pytest.FixtureRequest, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(request.instance, SynchronousTestCase):
        monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def logged(request: pytest.FixtureRequest) -> Any:
    """The log check for plain pytest tests (trial cases mix in LogCheckMixin):
    the test fails if it logged an error it did not ``logged.allow(text)``."""
    from tests.logcheck import LogCapture
    from twisted.logger import globalLogPublisher

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
