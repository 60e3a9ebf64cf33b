"""The scale settings: queue type, database pool size, LISTEN URL."""

from __future__ import annotations

import pytest

from taskflow.config import Settings
from taskflow.errors import ConfigError

DB = "postgresql://taskflow@db:5432/taskflow"


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.amqp_queue_type == "classic"
    assert settings.db_pool_size == 10
    assert settings.listen_database_url is None
    assert settings.retention_s == 7 * 86_400


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": DB,
            "TASKFLOW_AMQP_QUEUE_TYPE": "Quorum",
            "TASKFLOW_DB_POOL_SIZE": "25",
            "TASKFLOW_LISTEN_DATABASE_URL": "postgres://taskflow:secret@db-direct:5432/taskflow",
        }
    )
    assert settings.amqp_queue_type == "quorum"
    assert settings.db_pool_size == 25
    assert settings.listen_database_url == "postgres://taskflow:secret@db-direct:5432/taskflow"
    public = settings.public()
    assert public["listen_database_url"] == "postgres://taskflow:***@db-direct:5432/taskflow"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 604_800), ("7D", 604_800), ("0", 0)],
)
def test_retention_durations(value: str, seconds: int) -> None:
    assert Settings.from_env({"TASKFLOW_RETENTION": value}).retention_s == seconds


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TASKFLOW_AMQP_QUEUE_TYPE": "stream"}, "TASKFLOW_AMQP_QUEUE_TYPE"),
        ({"TASKFLOW_DB_POOL_SIZE": "0"}, "TASKFLOW_DB_POOL_SIZE"),
        ({"TASKFLOW_DB_POOL_SIZE": "ten"}, "TASKFLOW_DB_POOL_SIZE"),
        ({"TASKFLOW_DB_POOL_SIZE": "1.5"}, "TASKFLOW_DB_POOL_SIZE"),
        (
            {"DATABASE_URL": DB, "TASKFLOW_LISTEN_DATABASE_URL": "mysql://db/taskflow"},
            "TASKFLOW_LISTEN_DATABASE_URL",
        ),
        ({"TASKFLOW_LISTEN_DATABASE_URL": DB}, "TASKFLOW_LISTEN_DATABASE_URL"),
        *(
            ({"TASKFLOW_RETENTION": bad}, "TASKFLOW_RETENTION")
            for bad in ("7", "1.5h", "-1d", "7 d", "7days", "1w", "0s", "0d", "40000d", "abc")
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert variable in message
    assert "\n" not in message
