"""An agent program's package.json section: what is accepted, what makes the
program unavailable (with a reason that never holds the key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libchat.runtimes.agents.settings import Unavailable, agent_settings

COZE = {"runtime": "coze", "bot_id": "73", "api_key": "pat-secret-123"}


def test_a_coze_section_with_poll_timeout_is_served(tmp_path: Path) -> None:
    s = agent_settings("coze", {**COZE, "stream": False, "poll_timeout": 30}, tmp_path)
    assert s.api_key == "pat-secret-123"


@pytest.mark.parametrize("extra, why", [
    ({"poll_timeout": 0}, "poll_timeout must be a positive number"),
    ({"poll_timeout": "soon"}, "poll_timeout must be a positive number"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"bot_id": ""}, "bot_id must be a non-empty string"),
    ({"response_mode": "blocking"}, "unknown key(s) for a coze program: response_mode"),
])
def test_a_bad_coze_section_makes_the_program_unavailable(
        tmp_path: Path, extra: dict, why: str) -> None:
    with pytest.raises(Unavailable) as e:
        agent_settings("coze", {**COZE, **extra}, tmp_path)
    assert why in str(e.value) and "pat-secret-123" not in str(e.value)


def test_a_missing_key_env_says_which_variable(tmp_path: Path) -> None:
    section = {"runtime": "dify", "api_key_env": "NO_SUCH_VARIABLE_ANYWHERE"}
    with pytest.raises(Unavailable) as e:
        agent_settings("dify", section, tmp_path, env={})
    assert "NO_SUCH_VARIABLE_ANYWHERE" in str(e.value)
