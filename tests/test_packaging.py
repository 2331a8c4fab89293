"""The twistd plugin is visible however libchat was installed.

tox runs this in the regular install (`py3`) and in an editable one
(`editable`, i.e. `pip install -e .`), where setuptools' default editable
finder would hide `twisted/plugins/` from Twisted's plugin scan.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

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
