"""The long fuzz run, outside the normal suite:

    python -m tests.hardening.fuzz --seconds 600 [--seed N]

Mutates valid frames and bodies (bit flips, splices, truncations, random
headers, random splits) into the front protocol, a program socket and the
memory API, for the given time, and prints how many inputs it tried and
whether any broke a rule. Exit status 1 on the first failure (with the input).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from typing import Any, Callable

from twisted.logger import LogLevel, globalLogBeginner

from libchat.protocol.wire import HEADER, MAGIC

from .fuzzing import FrontWorld, feed_program, memory_api, memory_request, seeds, split

BODIES = [
    {"event_type": 3000, "action": "save_tool_memory", "key": "k", "value": {"a": [1, 2]}},
    {"event_type": 3000, "action": "query_tool_memory", "key": "k", "user_id": "alice"},
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            b[rng.randrange(len(b) + 1):rng.randrange(len(b) + 1)] = rng.randbytes(
                rng.randint(1, 16))
        elif op == 3 and b:
            del b[rng.randrange(len(b)):]
        elif op == 4:
            b += rng.choice(seeds())
        else:
            b = bytearray(HEADER.pack(rng.choice([MAGIC, rng.getrandbits(32)]),
                                      rng.choice([1, 1, 0, 2]), rng.getrandbits(16),
                                      rng.choice([len(b), rng.getrandbits(32),
                                                  rng.randrange(2048)]), 0)) + b[16:]
    return bytes(b)


def stream(rng: random.Random) -> list[bytes]:
    data = b"".join(mutate(rng, rng.choice(seeds())) if rng.random() < 0.8
                    else rng.choice(seeds()) for _ in range(rng.randint(1, 5)))
    return split(data, [rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 6))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:  # an unexpected logged error fails the run
        if event.get("log_failure") is not None or event.get("log_level") == LogLevel.critical:
            errors.append(event)
    globalLogBeginner.beginLoggingTo([observe], redirectStandardIO=False)

    front = FrontWorld()
    api, store = memory_api()
    counts = {"front": 0, "program": 0, "memory": 0}
    targets: list[tuple[str, Callable[[], Any]]] = [
        ("front", lambda: front.feed(stream(rng))),
        ("program", lambda: feed_program(stream(rng))),
        ("memory", lambda: memory_request(
            api, store, mutate(rng, json.dumps(rng.choice(BODIES)).encode()),
            {"Authorization": rng.choice(["Bearer good", "Bearer bad", "x"]),
             "Content-Type": "application/json"})),
    ]
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            for name, target in targets:
                state = rng.getstate()
                try:
                    target()
                    if errors:
                        raise AssertionError(f"logged error: {errors[0]}")
                except Exception:
                    rng.setstate(state)
                    sys.stderr.write(f"FAILED on {name} input (seed {seed}):\n"
                                     f"{traceback.format_exc()}")
                    return 1
                counts[name] += 1
    finally:
        front.close()
    total = sum(counts.values())
    sys.stdout.write(f"fuzz: seed {seed}, {args.seconds:g}s, {total} inputs "
                     f"({counts['front']} front, {counts['program']} program, "
                     f"{counts['memory']} memory), 0 failures\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
