"""Reference bound: a Python/Twisted client against the Node echo server.

``python -m bench.pyecho PATH DIALOGS INFLIGHT ROUNDS SECONDS [json]`` prints
one JSON object: the echo rate of each round. Every reply body is parsed and
every request encoded (orjson through :mod:`libchat.jsonc`, or stdlib ``json``
with the last argument ``json``), framed with libchat's own framer: the floor
under any Python router's per-message cost.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, endpoints, task
from twisted.internet.protocol import Protocol

from libchat import jsonc
from libchat.protocol.wire import FrameDecoder, encode_frame


class EchoClient(Protocol):
    def __init__(self, dialog: str, inflight: int, counter: list[int],
                 loads: Callable[[bytes], Any], dumps: Callable[[Any], bytes]) -> None:
        self.dialog, self.inflight, self.counter = dialog, inflight, counter
        self.loads, self.dumps = loads, dumps
        self.n = 0
        self.decoder = FrameDecoder()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self._frame() for _ in range(self.inflight)))

    def _frame(self) -> bytes:
        self.n += 1
        return encode_frame(1001, self.dumps({
            "event_type": 1001, "dialog_id": self.dialog, "user_id": "bench",
            "message_id": f"{self.dialog}.{self.n}",
            "messages": {"content": "x" * 64, "attachments": []}}))

    def dataReceived(self, data: bytes) -> None:
        frames, _ = self.decoder.feed(data)
        out = []
        for _type, body in frames:
            self.loads(body)
            out.append(self._frame())
        self.counter[0] += len(frames)
        assert self.transport is not None
        self.transport.write(b"".join(out))


@defer.inlineCallbacks
def main(reactor: Any, path: str, dialogs: str, inflight: str, rounds: str, seconds: str,
         codec: str = "orjson") -> Any:
    if codec == "json":
        loads: Callable[[bytes], Any] = json.loads

        def dumps(obj: Any) -> bytes:
            return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    else:
        loads, dumps = jsonc.loads, jsonc.dumps
    counter = [0]
    endpoint = endpoints.UNIXClientEndpoint(reactor, path)
    for i in range(int(dialogs)):
        yield endpoints.connectProtocol(
            endpoint, EchoClient(f"py{i}", int(inflight), counter, loads, dumps))
    yield task.deferLater(reactor, 1.0, lambda: None)  # warm-up
    results = []
    for _ in range(int(rounds)):
        counter[0] = 0
        t0 = time.perf_counter()
        yield task.deferLater(reactor, float(seconds), lambda: None)
        results.append({"rate": counter[0] / (time.perf_counter() - t0)})
    sys.stdout.write(json.dumps({"rounds": results, "codec": codec}) + "\n")


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
