"""Fixtures of the cluster tests: a private redis-server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_server import RedisServer, running_server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server of this test's own (port, dir); stopped and removed after."""
    yield from running_server(unixsocket=True)
