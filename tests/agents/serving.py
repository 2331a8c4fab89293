"""A real ``twistd libchat`` in front of a fake agent, for the Dify and Coze
integration tests: one launcher per test, each closed at the end with a check
that the agent's key never reached its log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.launcher import Libchat


def agent_servers(tmp_path: Path, key: str, env_name: str,
                  write_programs: Callable[..., Path]) -> Iterator[Callable[..., Libchat]]:
    """Yields ``make(key=key, **section)``: writes the program library with
    ``write_programs(**section)`` and starts twistd with ``env_name=key``."""
    made: list[Libchat] = []

    def make(key_value: str = key, **section: Any) -> Libchat:
        programs = write_programs(**section)
        env = dict(os.environ, **{env_name: key_value})
        lc = Libchat(tmp_path / f"lc{len(made)}", "--kill-grace", "1", programs=programs,
                     env=env)
        made.append(lc)
        return lc.start()
    yield make
    for lc in made:
        lc.close()
        assert key not in lc.output(), "the API key reached the log"


def msg(text: str, dialog: str = "d1", user: str = "u1") -> dict[str, Any]:
    """A 1001 of the frame protocol."""
    return {"event_type": 1001, "dialog_id": dialog, "user_id": user,
            "messages": {"content": text, "attachments": []}}
