"""Fixtures of the hardening tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path (Unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
