"""The platform outbox across real ``twistd -n libchat --redis`` nodes: a
WeCom reply that node A could not send (the loopback fake WeCom answers 503)
is kept in Redis (``lc:pout:a``); after ``kill -9`` of A, the survivor takes
A's outbox when A's lease is gone and sends the reply, exactly once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.platforms.fakes import serve
from tests.platforms.fakes.wecom import FakeWeCom
from tests.platforms.test_twistd_platforms import (AGENT, WECOM_SECRET, until, wecom_hr,
                                                   wecom_post)
from tests.platforms.test_wecom_crypto import CORP

from .nodes import Node
from .redis_server import RedisServer


@pytest.fixture
def wecom() -> Iterator[tuple[FakeWeCom, str]]:
    fake = FakeWeCom(reactor, corp_id=CORP, secret=WECOM_SECRET, agent_id=AGENT)
    listening = pytest_twisted.blockon(serve.listen(fake, reactor))
    yield fake, listening.base_url
    pytest_twisted.blockon(listening.stop())


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer, wecom: Any) -> Iterator[list[Node]]:
    config = tmp_path / "libchat.toml"
    config.write_text(wecom_hr(wecom[1], "echo"))
    os.environ["TEST_WECOM_SECRET"] = WECOM_SECRET  # the nodes inherit it
    started: list[Node] = []
    try:
        for name in ("a", "b"):
            started.append(Node(tmp_path, redis_server, name, "--config", str(config)).start())
        yield started
    finally:
        for node in started:
            node.close()
        os.environ.pop("TEST_WECOM_SECRET", None)


@pytest.mark.timeout(90)
@pytest_twisted.inlineCallbacks
def test_a_reply_left_in_a_killed_nodes_outbox_is_sent_once_by_the_survivor(
        pair: list[Node], wecom: Any, redis_server: RedisServer) -> Any:
    a, b = pair
    fake = wecom[0]
    fake.script.fail("send", status=503, times=1000)
    status, _, _ = yield wecom_post(a, "durable")
    assert status == 200
    yield until(lambda: len(fake.script.to("send")) >= 2, what="node a retrying its send")
    assert a.metrics()[("libchat_platform_outbox_unsaved", ())] == 0
    assert a.metrics()[("libchat_platform_outbox", (("app", "hr"), ("platform", "wecom")))] == 1
    held = redis_server.call("HGETALL", "lc:pout:a")
    assert any(b'"echo: durable"' in v for v in held[1::2]), held
    a.kill9()
    killed = time.monotonic()
    fake.script.faults.clear()
    yield until(lambda: fake.texts(), timeout=25, what="the survivor sending the reply")
    took = time.monotonic() - killed
    assert took < 15, f"sent {took:.1f}s after the kill"
    yield task.deferLater(reactor, 3.0, lambda: None)  # no second copy comes
    assert fake.texts() == ["echo: durable"]
    assert fake.delivered[0]["touser"] == "lisi"
    assert redis_server.call("HLEN", "lc:pout:a") == 0
    assert redis_server.call("HLEN", "lc:pout:b") == 0
    assert "took 1 unsent item(s) of node a" in b.output()
