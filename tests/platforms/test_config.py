"""The [wecom.NAME] / [lark.NAME] tables: required keys, secrets, refusals
that name the table and the key."""

from __future__ import annotations

from typing import Any

import pytest

from libchat.doors.platforms.config import (
    DEFAULT_UNHANDLED, LARK_API, WECOM_API, ConfigError, lark_app, wecom_app)

AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
GOOD_WECOM = {"corp_id": "ww1", "agent_id": 1000002, "token": "t", "encoding_aes_key": AES_KEY,
              "secret": "s"}
GOOD_LARK = {"app_id": "cli_a", "app_secret": "s", "verification_token": "v"}


def test_wecom_defaults() -> None:
    app = wecom_app("hr", GOOD_WECOM)
    assert app.api_base == WECOM_API and app.agent_id == 1000002
    assert app.common.unhandled_text == DEFAULT_UNHANDLED and app.common.intent is None
    assert "kWxPEV" not in repr(app) and "secret='s'" not in repr(app)


def test_lark_defaults_and_optional_encrypt_key() -> None:
    app = lark_app("bot", dict(GOOD_LARK, api_base="http://127.0.0.1:9/", intent="helpdesk"))
    assert app.encrypt_key is None and app.api_base == "http://127.0.0.1:9"
    assert app.common.intent == "helpdesk" and lark_app("bot", GOOD_LARK).api_base == LARK_API


@pytest.mark.parametrize("change, key", [
    ({"agent_id": "1"}, "agent_id"), ({"agent_id": None}, "agent_id"),
    ({"encoding_aes_key": "short"}, "encoding_aes_key"), ({"corp_id": ""}, "corp_id"),
    ({"token": None}, "token"), ({"colour": "red"}, "colour"), ({"intent": "Bad Name"}, "intent"),
    ({"api_base": "ftp://x"}, "api_base"), ({"token_env": "X"}, "token"),
])
def test_wecom_refusals_name_the_key(change: dict[str, Any], key: str) -> None:
    data = {k: v for k, v in dict(GOOD_WECOM, **change).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        wecom_app("hr", data)
    assert info.value.table == "wecom.hr" and info.value.key == key
    assert str(info.value).startswith(f"[wecom.hr] {key}")
    assert AES_KEY not in str(info.value)


def test_lark_missing_verification_token_and_bad_name() -> None:
    with pytest.raises(ConfigError, match=r"\[lark.bot\] verification_token"):
        lark_app("bot", {"app_id": "a", "app_secret": "s"})
    with pytest.raises(ConfigError, match="app name"):
        lark_app("a:b", GOOD_LARK)


def test_secret_reader_is_injected_and_its_errors_are_named() -> None:
    def read(table: Any, key: str) -> str | None:
        if key + "_file" in table:
            raise FileNotFoundError(2, "No such file or directory")
        return {"app_secret_env": "from-env"}.get(key + "_env") if key + "_env" in table else table.get(key)

    app = lark_app("bot", {"app_id": "a", "app_secret_env": "LARK_SECRET", "verification_token": "v"}, read)
    assert app.app_secret == "from-env"
    with pytest.raises(ConfigError, match=r"\[lark.bot\] app_secret_file: cannot be read"):
        lark_app("bot", {"app_id": "a", "app_secret_file": "/nope", "verification_token": "v"}, read)


def test_the_section_9_loader_checks_the_platform_tables(tmp_path: Any) -> None:
    """Through libchat.config (as twistd reads the file): the three secret
    forms resolved, one line naming the file, table and key on a refusal."""
    from libchat import config as lconfig
    from libchat.doors.platforms import tables
    from libchat.options import top_table

    key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
    (tmp_path / "aes").write_text(key + "\n")
    good = tmp_path / "good.toml"
    good.write_text(f'[wecom.hr]\ncorp_id = "ww1"\nagent_id = 2\ntoken = "t"\n'
                    f'encoding_aes_key_file = "{tmp_path / "aes"}"\nsecret_env = "S"\n'
                    '[lark.bot]\napp_id = "cli"\napp_secret = "lark-secret-xyz"\nverification_token = "v"\n')
    found = lconfig.load(good, top_table(), env={"S": "from-env"})
    wecom, lark = tables.apps(found.tables, str(good))
    assert (wecom[0].encoding_aes_key, wecom[0].secret) == (key, "from-env")
    assert lark[0].encrypt_key is None and "lark-secret-xyz" not in repr(lark[0])
    bad = tmp_path / "bad.toml"
    bad.write_text('[wecom.hr]\ncorp_id = "ww1"\nagent_id = 2\ntoken = "t"\n'
                   'encoding_aes_key = "short"\nsecret = "s"\n')
    with pytest.raises(lconfig.ConfigError) as e:
        tables.apps(lconfig.load(bad, top_table()).tables, str(bad))
    assert "bad.toml" in str(e.value) and "[wecom.hr] encoding_aes_key" in str(e.value)
    assert "short" not in str(e.value) and "\n" not in str(e.value)
    missing = tmp_path / "missing.toml"
    missing.write_text('[lark.bot]\napp_id = "cli"\napp_secret = "x"\n')
    with pytest.raises(lconfig.ConfigError, match=r"\[lark.bot\], key 'verification_token'"):
        lconfig.load(missing, top_table())
