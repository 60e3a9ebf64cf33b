"""API tokens, the metrics token and the client token from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskflow.config import Role, Settings
from taskflow.errors import ConfigError

SECRET = "s3cr3t-Token_value"


def test_unset_means_no_tokens() -> None:
    settings = Settings.from_env({})
    assert settings.api_tokens == ()
    assert settings.metrics_token is None
    assert settings.client_token is None


def test_entries_from_the_variable() -> None:
    env = {"TASKFLOW_API_TOKENS": f" read:{SECRET}, WRITE:w-1 ,admin:a/b+c== "}
    assert Settings.from_env(env).api_tokens == (
        (Role.READ, SECRET),
        (Role.WRITE, "w-1"),
        (Role.ADMIN, "a/b+c=="),
    )


def test_entries_from_a_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# operators\nadmin:{SECRET}\n\n  read:dash-1  \n# end\n")
    settings = Settings.from_env({"TASKFLOW_API_TOKENS_FILE": str(path)})
    assert settings.api_tokens == ((Role.ADMIN, SECRET), (Role.READ, "dash-1"))


def test_the_same_token_twice_with_one_role_is_kept_once() -> None:
    env = {"TASKFLOW_API_TOKENS": f"read:{SECRET},read:{SECRET}"}
    assert Settings.from_env(env).api_tokens == ((Role.READ, SECRET),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"reader:{SECRET}", "TASKFLOW_API_TOKENS: entry 1 has an unknown role 'reader'"),
        ("read:", "TASKFLOW_API_TOKENS: entry 1 has an empty token"),
        (f"read:a,{SECRET}", "TASKFLOW_API_TOKENS: entry 2 is not ROLE:TOKEN"),
        (f"read:a,,write:{SECRET}", "TASKFLOW_API_TOKENS: entry 2 is not ROLE:TOKEN"),
        (f"read:{SECRET},admin:{SECRET}", "TASKFLOW_API_TOKENS: entry 2 repeats a token"),
        ("read:has space", "TASKFLOW_API_TOKENS: entry 1 is not a valid bearer token"),
        ("read:tok\u00e9n", "TASKFLOW_API_TOKENS: entry 1 is not a valid bearer token"),
    ],
)
def test_a_bad_entry_names_the_variable_and_never_the_token(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASKFLOW_API_TOKENS": value})
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert SECRET not in message


def test_a_bad_line_in_the_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\nread:{SECRET}\nsuperuser:{SECRET}x\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASKFLOW_API_TOKENS_FILE": str(path)})
    message = str(caught.value)
    assert message.startswith(f"TASKFLOW_API_TOKENS_FILE: {path} line 3 has an unknown role")
    assert SECRET not in message


@pytest.mark.parametrize("content", [None, "", "# only comments\n\n"])
def test_a_missing_or_empty_file_stops_start_up(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"^TASKFLOW_API_TOKENS_FILE: "):
        Settings.from_env({"TASKFLOW_API_TOKENS_FILE": str(path)})


def test_both_the_variable_and_the_file_is_an_error(tmp_path: Path) -> None:
    env = {"TASKFLOW_API_TOKENS": "read:a", "TASKFLOW_API_TOKENS_FILE": str(tmp_path)}
    with pytest.raises(ConfigError, match="both set"):
        Settings.from_env(env)


@pytest.mark.parametrize("name", ["TASKFLOW_METRICS_TOKEN", "TASKFLOW_TOKEN"])
def test_single_tokens(name: str) -> None:
    settings = Settings.from_env({name: f" {SECRET} "})
    assert (settings.metrics_token, settings.client_token) == (
        (SECRET, None) if name == "TASKFLOW_METRICS_TOKEN" else (None, SECRET)
    )
    with pytest.raises(ConfigError, match=f"^{name} is not a valid bearer token"):
        Settings.from_env({name: "two words"})


def test_secrets_stay_out_of_repr_and_public() -> None:
    settings = Settings.from_env(
        {
            "TASKFLOW_API_TOKENS": f"read:{SECRET}1,admin:{SECRET}2,read:{SECRET}3",
            "TASKFLOW_METRICS_TOKEN": f"{SECRET}4",
            "TASKFLOW_TOKEN": f"{SECRET}5",
            "DATABASE_URL": "postgresql://u:db-p%40ss@h/d?password=other",
        }
    )
    assert SECRET not in repr(settings)
    public = settings.public()
    assert SECRET not in repr(public)
    assert public["api_tokens"] == {"read": 2, "admin": 1}
    assert public["metrics_token"] == "***"
    assert public["client_token"] == "***"
    found = settings.secrets()
    assert {f"{SECRET}{n}" for n in range(1, 6)} <= set(found)
    assert {"db-p%40ss", "db-p@ss", "other", "guest"} <= set(found)
