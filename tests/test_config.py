"""``--config FILE`` (libchat.config, libchat.options): every refusal is one line
naming the file, the table and the key; the command line wins; secrets stay secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.python import usage

from libchat import config
from libchat.config import ConfigError, Key, Secret, Table
from libchat.options import Options

from .helpers import FIXTURES

SECRET = "correct-horse-battery-staple-0123456789"

# a table declared the way a door declares its own (later: [wecom.NAME], ...)
APPS = Table("apps", named=True, keys=(
    Key("corp_id", required=True),
    Key("agent_id", kind=int, required=True),
    Key("token", secret=True, required=True),
    Key("api_base", default="https://example.invalid"),
    Key("retries", kind=int, default=3, coerce=lambda v: _at_least(v, 0)),
))
HUB = Table("hub", keys=(Key("max_connections", kind=int, default=100),),
            tables=(Table("clients", named=True, keys=(Key("secret", secret=True),)),))
TOP = Table("", keys=(Key("level", kind=float, default=1.0),))


def _at_least(v: int, minimum: int) -> int:
    if v < minimum:
        raise ValueError(f"must be at least {minimum}")
    return v


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "libchat.toml"
    path.write_text(text)
    return path


def load(path: Path, env: dict[str, str] | None = None) -> config.Config:
    return config.load(path, TOP, {"apps": APPS, "hub": HUB}, env=env or {})


def refused(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load(path, env)
    line = str(e.value)
    assert "\n" not in line and str(path) in line
    assert SECRET not in line
    return line


GOOD_APP = '[apps.acme]\ncorp_id = "c1"\nagent_id = 7\n'


# -- the mechanism: a table declared in the test -------------------------------


def test_a_declared_named_table_is_checked_and_gets_its_defaults(tmp_path: Path) -> None:
    found = load(write(tmp_path, f'level = 2\n{GOOD_APP}token = "{SECRET}"\n'))
    assert found.top == {"level": 2}
    app = found.tables["apps"]["acme"]
    assert app["corp_id"] == "c1" and app["agent_id"] == 7 and app["retries"] == 3
    assert app["api_base"] == "https://example.invalid"
    assert isinstance(app["token"], Secret) and app["token"].reveal() == SECRET
    assert SECRET not in repr(found) and SECRET not in str(app)


def test_a_table_absent_from_the_file_is_absent(tmp_path: Path) -> None:
    assert load(write(tmp_path, "level = 1.5\n")).tables == {}


def test_nested_tables_are_checked_too(tmp_path: Path) -> None:
    found = load(write(tmp_path, f'[hub]\n[hub.clients.x]\nsecret = "{SECRET}"\n'))
    assert found.tables["hub"]["max_connections"] == 100
    assert found.tables["hub"]["clients"]["x"]["secret"].reveal() == SECRET
    line = refused(write(tmp_path, '[hub.clients.x]\nsecrett = "s"\n'))
    assert "table [hub.clients.x], key 'secrett': unknown key (did you mean 'secret'?)" in line


def test_register_makes_a_table_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "TABLES", {})
    config.register(APPS)
    found = config.load(write(tmp_path, f'{GOOD_APP}token = "t"\n'), TOP, env={})
    assert found.tables["apps"]["acme"]["agent_id"] == 7
    with pytest.raises(ValueError):
        config.register(Table("apps"))


# -- refusals -------------------------------------------------------------------


def test_malformed_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    line = refused(write(tmp_path, 'level = 1\n[apps.acme\n'))
    assert "is not valid TOML" in line and "line 2" in line


def test_a_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    line = refused(tmp_path / "missing.toml")
    assert line.startswith(f"cannot read config file {tmp_path / 'missing.toml'}")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('level = 1 # caf\xe9\n'.encode("latin-1"))
    assert "is not UTF-8" in refused(path)


def test_an_unknown_top_level_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    line = refused(write(tmp_path, "levle = 1\n"))
    assert line.endswith("top level, key 'levle': unknown key (did you mean 'level'?)")


def test_an_unknown_table_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, "[nope]\nx = 1\n"))
    assert "top level, key 'nope': unknown key" in line


def test_an_unknown_key_in_a_table_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token = "t"\ncolour = "red"\n'))
    assert "table [apps.acme], key 'colour': unknown key" in line


def test_a_mistyped_value_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, '[apps.acme]\ncorp_id = "c"\nagent_id = "7"\ntoken = "t"\n'))
    assert "table [apps.acme], key 'agent_id': must be an integer, not a string" in line
    line = refused(write(tmp_path, 'level = true\n'))
    assert "key 'level': must be a number, not a boolean" in line


def test_a_value_the_coercion_refuses_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token = "t"\nretries = -1\n'))
    assert "table [apps.acme], key 'retries': must be at least 0" in line


def test_a_missing_required_key_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, '[apps.acme]\ncorp_id = "c1"\ntoken = "t"\n'))
    assert "table [apps.acme], key 'agent_id': required but missing" in line
    line = refused(write(tmp_path, GOOD_APP))
    assert "key 'token': required but missing (give 'token' or 'token_file' or " \
           "'token_env')" in line


def test_a_bad_table_name_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, '[apps."a b"]\ncorp_id = "c"\n'))
    assert "table [apps.a b]" in line


def test_a_table_given_as_a_value_is_refused(tmp_path: Path) -> None:
    assert "table [apps]: must be a table" in refused(write(tmp_path, 'apps = 3\n'))


# -- secrets: inline, _file, _env ----------------------------------------------


def test_a_secret_from_a_file_is_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    found = load(write(tmp_path, f'{GOOD_APP}token_file = "{tmp_path / "token"}"\n'))
    assert found.tables["apps"]["acme"]["token"].reveal() == SECRET


def test_a_secret_from_the_environment(tmp_path: Path) -> None:
    found = load(write(tmp_path, f'{GOOD_APP}token_env = "ACME_TOKEN"\n'),
                 env={"ACME_TOKEN": SECRET})
    assert found.tables["apps"]["acme"]["token"].reveal() == SECRET


def test_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token_file = "{tmp_path / "nope"}"\n'))
    assert "table [apps.acme], key 'token_file': cannot read secret file" in line
    assert "No such file or directory" in line


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    line = refused(write(tmp_path, f'{GOOD_APP}token_file = "{tmp_path / "empty"}"\n'))
    assert "key 'token_file': the secret file is empty" in line


def test_an_unset_secret_variable_is_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token_env = "NOT_SET_ANYWHERE"\n'))
    assert "key 'token_env': environment variable NOT_SET_ANYWHERE is not set or empty" in line


def test_two_forms_of_one_secret_are_refused(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token = "{SECRET}"\ntoken_env = "X"\n'))
    assert "give only one of token, token_env" in line


def test_a_secret_of_the_wrong_type_is_refused_without_its_value(tmp_path: Path) -> None:
    line = refused(write(tmp_path, f'{GOOD_APP}token = ["{SECRET}"]\n'))
    assert "key 'token': must be a string, not a list" in line


def test_a_secret_its_coercion_refuses_is_refused_without_its_value(tmp_path: Path) -> None:
    def forty_three(v: str) -> str:
        if len(v) != 43:
            raise ValueError(f"{v!r} is not 43 characters")  # quotes the secret
        return v

    table = Table("k", keys=(Key("aes", secret=True, coerce=forty_three, help="43 characters"),))
    path = write(tmp_path, f'[k]\naes = "{SECRET}"\n')
    with pytest.raises(ConfigError) as e:
        config.load(path, TOP, {"k": table}, env={})
    assert str(e.value).endswith("table [k], key 'aes': not a valid aes (43 characters)")
    assert SECRET not in str(e.value)


# -- the top level is the command line's options -------------------------------


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_every_option_may_be_given_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        'front = ["tcp:1:interface=127.0.0.1", "unix:/tmp/x.sock"]',
        'api = "tcp:2"', 'web = "tcp:3"', f'programs = "{FIXTURES}"', 'data = "d"',
        'node = "/usr/bin/node"', "idle-timeout = 60", "flush-interval = 0.5",
        "max-programs = 9", "max-frame = 1024", "start-timeout = 3", "kill-grace = 0",
        'magic = "0x4C434855"', "background-limit = 10", "frame-timeout = 0", "warm = 1",
        "spawn-concurrency = 2", 'runtime-dir = "/tmp"', "ws-rate = 5",
        "ws-max-per-user = 2", "ws-ping = 30", "ws-pong = 5", f'auth-secret = "{SECRET}"', ""]))
    o = parse("--config", str(path))
    assert o["front"] == ["tcp:1:interface=127.0.0.1", "unix:/tmp/x.sock"]
    assert (o["api"], o["web"], o["programs"], o["data"]) == ("tcp:2", "tcp:3", str(FIXTURES), "d")
    assert o["idle-timeout"] == 60.0 and isinstance(o["idle-timeout"], float)
    assert (o["max-programs"], o["max-frame"], o["magic"]) == (9, 1024, 0x4C434855)
    assert (o["kill-grace"], o["warm"], o["ws-pong"]) == (0.0, 1, 5.0)
    assert o["secret"] == SECRET.encode()


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'programs = "{FIXTURES}"\nidle-timeout = 60\nfront = ["tcp:1"]\n'
                           f'auth-secret = "{SECRET}"\nmax-programs = 9\n')
    o = parse("--config", str(path), "--idle-timeout", "3600", "--front", "tcp:5",
              "--auth-secret", "from-the-command-line", "--max-prog", "4")
    # 3600 is also the default: the command line still wins
    assert o["idle-timeout"] == 3600.0 and o["front"] == ["tcp:5"] and o["max-programs"] == 4
    assert o["secret"] == b"from-the-command-line"


def test_a_single_front_string_is_one_endpoint(tmp_path: Path) -> None:
    o = parse("--config", str(write(tmp_path, f'programs = "{FIXTURES}"\nfront = "tcp:7"\n')))
    assert o["front"] == ["tcp:7"]


def test_the_auth_secret_from_a_file_or_the_environment(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jwt").write_text(SECRET)
    o = parse("--config", str(write(
        tmp_path, f'programs = "{FIXTURES}"\nauth-secret-file = "{tmp_path / "jwt"}"\n')))
    assert o["secret"] == SECRET.encode()
    monkeypatch.setenv("LIBCHAT_JWT", SECRET)
    o = parse("--config", str(write(
        tmp_path, f'programs = "{FIXTURES}"\nauth-secret-env = "LIBCHAT_JWT"\n')))
    assert o["secret"] == SECRET.encode()


@pytest.mark.parametrize("text, expected", [
    ("idle-timeout = \"soon\"", "top level, key 'idle-timeout': must be a number, not a string"),
    ("idle-timeout = 0", "top level, key 'idle-timeout': must be at least 0.001"),
    ("max-programs = 2.5", "top level, key 'max-programs': must be an integer, not a number"),
    ("max-programs = 0", "top level, key 'max-programs': must be at least 1"),
    ("magic = \"banana\"", "top level, key 'magic': must be an integer (decimal or 0x hex), not 'banana'"),
    ("magic = 99999999999", "top level, key 'magic': must fit in 32 bits"),
    ("front = [1]", "top level, key 'front': must be a list of strings"),
    ("config = \"other.toml\"", "top level, key 'config': unknown key"),
    ("auth-secret-file = \"/nonexistent/jwt\"",
     "top level, key 'auth-secret-file': cannot read secret file /nonexistent/jwt"),
    ("[weecom.acme]\ncorp_id = \"c\"", "top level, key 'weecom': unknown key (did you mean 'wecom'?)"),
])
def test_a_bad_top_level_value_is_refused_as_a_usage_error(tmp_path: Path, text: str,
                                                           expected: str) -> None:
    path = write(tmp_path, f'programs = "{FIXTURES}"\n{text}\n')
    with pytest.raises(usage.UsageError) as e:
        parse("--config", str(path))
    assert expected in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="cannot read config file"):
        parse("--config", str(tmp_path / "nope.toml"))


def test_without_config_nothing_changes() -> None:
    o = parse("--programs", str(FIXTURES))
    assert o["idle-timeout"] == 3600.0 and o["front"] == ["tcp:8082:interface=127.0.0.1"]
    assert o.tables == {} and o["secret"] is None


def test_an_unreadable_programs_dir_is_a_usage_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if str(p) == str(tmp_path)
                        else real(p, m, **kw))
    with pytest.raises(usage.UsageError) as e:
        parse("--programs", str(tmp_path))
    assert str(e.value) == (f"--programs: cannot read {tmp_path} (permission denied); "
                            "fix its permissions or choose another with --programs")


def test_every_key_is_in_docs_configuration_md() -> None:
    from libchat.options import top_table
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    missing = [k.name for k in top_table().keys if f"`{k.name}`" not in docs]
    assert missing == []
    for name in ("auth-secret-file", "auth-secret-env"):
        assert f"`{name}`" in docs


def test_the_documented_example_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ) -> None:
    """The complete example in docs/configuration.md is a file libchat accepts."""
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "programs").mkdir()
    monkeypatch.setenv("LIBCHAT_JWT_SECRET", SECRET)
    path = write(tmp_path, example)
    o: Any = parse("--config", str(path))
    assert o["secret"] == SECRET.encode()
