"""The twistd plugin is visible however libchat was installed.

tox runs this in the regular install (`py3`) and in an editable one
(`editable`, i.e. `pip install -e .`), where setuptools' default editable
finder would hide `twisted/plugins/` from Twisted's plugin scan. At the end:
the suite's per-test deadline (pytest-timeout) ends a hung test's run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from .launcher import ROOT
from .logcheck import LogCheckMixin


class PluginTests(LogCheckMixin, SynchronousTestCase):
    def test_getplugins_lists_libchat(self) -> None:
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("libchat", makers)
        self.assertEqual(makers["libchat"].module, "libchat.tap")

    def test_twistd_knows_the_libchat_subcommand(self) -> None:
        twistd = str(Path(sys.executable).parent / "twistd")
        out = subprocess.run([twistd, "libchat", "--help"], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("--max-programs", out.stdout)

    def test_the_node_sdk_ships_inside_the_package(self) -> None:
        import libchat.runtimes.node.runner
        self.assertTrue((libchat.runtimes.node.runner.NODE_SDK_DIR / "libchat" / "index.js").is_file())


# -- the one runner's deadlines (tox.ini [pytest]) -----------------------------------

HUNG = '''
import time

import pytest_twisted
from twisted.internet import defer


@pytest_twisted.inlineCallbacks
def test_waits_for_a_deferred_nobody_fires():
    yield defer.Deferred()


def test_blocks_the_main_thread():
    time.sleep(3600)
'''


def test_every_test_has_a_deadline_that_suits_the_reactor() -> None:
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "tox.ini")
    assert float(config["pytest"]["timeout"]) > 0
    # "signal" would raise into the reactor's greenlet: the run then hangs
    assert config["pytest"]["timeout_method"] == "thread"


@pytest.mark.parametrize("test", ["test_waits_for_a_deferred_nobody_fires",
                                  "test_blocks_the_main_thread"])
def test_a_hung_test_fails_the_run_instead_of_hanging_it(tmp_path: Path, test: str) -> None:
    """With the project's own [pytest] config (only the deadline shortened),
    a hung test ends the run, non-zero, naming the timeout."""
    (tmp_path / "test_hung.py").write_text(HUNG)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "tox.ini"), "--rootdir",
         str(tmp_path), "-p", "no:cacheprovider", "-o", "timeout=2",
         f"{tmp_path / 'test_hung.py'}::{test}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode != 0
    assert "Timeout" in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    assert time.monotonic() - started < 60


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """.ci/run must call the README's test command verbatim (CI = what a newcomer types)."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Test it", 1)[1]
    command = next(line.strip() for line in section.splitlines() if line.startswith("    "))
    ci_lines = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == command


def test_every_libchat_package_is_listed_in_setup_cfg() -> None:
    """An installed (not editable) libchat must hold every package."""
    import configparser

    root = Path(__file__).resolve().parent.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(root).parts)
             for p in (root / "libchat").rglob("__init__.py")}
    assert found - listed == set()
