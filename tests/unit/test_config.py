"""Settings from the environment: every variable, its default, and each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskflow.config import DEFAULT_AMQP_URL, Settings, mask_url
from taskflow.errors import ConfigError


def test_defaults_with_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.amqp_url == DEFAULT_AMQP_URL == "amqp://guest:guest@localhost:5672/"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.processors == 1_000
    assert settings.queue_size == 10_000
    assert (settings.work_min_s, settings.work_max_s) == (5.0, 10.0)
    assert settings.failure_rate == 0.1
    assert settings.lease_s == 30.0
    assert settings.amqp_queue == "tasks"
    assert settings.log_format == "console"
    assert settings.log_level == "info"
    assert settings.data_dir == Path(".taskflow/postgres")
    assert settings.shutdown_grace_s == 10.0


def test_blank_values_mean_the_default() -> None:
    assert Settings.from_env({"TASKFLOW_PROCESSORS": "  ", "DATABASE_URL": ""}) == Settings()


def test_every_variable_is_read() -> None:
    env = {
        "DATABASE_URL": "postgresql://app:secret@db:5432/taskflow",
        "AMQP_URL": "amqps://user:pw@mq:5671/vhost",
        "TASKFLOW_HOST": "0.0.0.0",
        "TASKFLOW_PORT": "9000",
        "TASKFLOW_PROCESSORS": "7",
        "TASKFLOW_QUEUE_SIZE": "12",
        "TASKFLOW_WORK_MIN_S": "0.5",
        "TASKFLOW_WORK_MAX_S": "1.5",
        "TASKFLOW_FAILURE_RATE": "0.25",
        "TASKFLOW_LEASE_S": "4",
        "TASKFLOW_AMQP_QUEUE": "jobs",
        "TASKFLOW_LOG_FORMAT": "JSON",
        "TASKFLOW_LOG_LEVEL": "Debug",
        "TASKFLOW_DATA_DIR": "/var/lib/taskflow",
        "TASKFLOW_SHUTDOWN_GRACE_S": "3",
    }
    assert Settings.from_env(env) == Settings(
        database_url="postgresql://app:secret@db:5432/taskflow",
        amqp_url="amqps://user:pw@mq:5671/vhost",
        host="0.0.0.0",
        port=9000,
        processors=7,
        queue_size=12,
        work_min_s=0.5,
        work_max_s=1.5,
        failure_rate=0.25,
        lease_s=4.0,
        amqp_queue="jobs",
        log_format="json",
        log_level="debug",
        data_dir=Path("/var/lib/taskflow"),
        shutdown_grace_s=3.0,
    )


def test_benchmark_mode_and_the_ends_of_the_failure_rate_are_valid() -> None:
    env = {"TASKFLOW_WORK_MIN_S": "0", "TASKFLOW_WORK_MAX_S": "0", "TASKFLOW_FAILURE_RATE": "0"}
    settings = Settings.from_env(env)
    assert (settings.work_min_s, settings.work_max_s, settings.failure_rate) == (0, 0, 0)
    assert Settings.from_env({"TASKFLOW_FAILURE_RATE": "1"}).failure_rate == 1.0


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"PORT": "5000"}, 5000),
        ({"TASKFLOW_PORT": "6000"}, 6000),
        ({"TASKFLOW_PORT": "6000", "PORT": "5000"}, 6000),
        ({"TASKFLOW_PORT": "", "PORT": "5000"}, 5000),
    ],
)
def test_taskflow_port_wins_over_port(env: dict[str, str], port: int) -> None:
    assert Settings.from_env(env).port == port


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TASKFLOW_PORT": "http", "PORT": "5000"}, "TASKFLOW_PORT"),
        ({"PORT": "99999"}, "PORT"),
        ({"TASKFLOW_PORT": "0"}, "TASKFLOW_PORT"),
        ({"TASKFLOW_PORT": "80.5"}, "TASKFLOW_PORT"),
        ({"TASKFLOW_PROCESSORS": "0"}, "TASKFLOW_PROCESSORS"),
        ({"TASKFLOW_PROCESSORS": "ten"}, "TASKFLOW_PROCESSORS"),
        ({"TASKFLOW_PROCESSORS": "2.5"}, "TASKFLOW_PROCESSORS"),
        ({"TASKFLOW_QUEUE_SIZE": "-1"}, "TASKFLOW_QUEUE_SIZE"),
        ({"TASKFLOW_WORK_MIN_S": "-0.1"}, "TASKFLOW_WORK_MIN_S"),
        ({"TASKFLOW_WORK_MIN_S": "nan"}, "TASKFLOW_WORK_MIN_S"),
        ({"TASKFLOW_WORK_MAX_S": "inf"}, "TASKFLOW_WORK_MAX_S"),
        ({"TASKFLOW_WORK_MAX_S": "soon"}, "TASKFLOW_WORK_MAX_S"),
        ({"TASKFLOW_WORK_MIN_S": "8", "TASKFLOW_WORK_MAX_S": "2"}, "TASKFLOW_WORK_MIN_S"),
        ({"TASKFLOW_FAILURE_RATE": "1.01"}, "TASKFLOW_FAILURE_RATE"),
        ({"TASKFLOW_FAILURE_RATE": "-0.5"}, "TASKFLOW_FAILURE_RATE"),
        ({"TASKFLOW_FAILURE_RATE": "10%"}, "TASKFLOW_FAILURE_RATE"),
        ({"TASKFLOW_LEASE_S": "0"}, "TASKFLOW_LEASE_S"),
        ({"TASKFLOW_LEASE_S": "forever"}, "TASKFLOW_LEASE_S"),
        ({"TASKFLOW_SHUTDOWN_GRACE_S": "-1"}, "TASKFLOW_SHUTDOWN_GRACE_S"),
        ({"TASKFLOW_LOG_FORMAT": "xml"}, "TASKFLOW_LOG_FORMAT"),
        ({"TASKFLOW_LOG_LEVEL": "verbose"}, "TASKFLOW_LOG_LEVEL"),
        ({"DATABASE_URL": "mysql://db/taskflow"}, "DATABASE_URL"),
        ({"DATABASE_URL": "db.example.com"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://db:port/taskflow"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://[::1/taskflow"}, "DATABASE_URL"),
        ({"AMQP_URL": "http://mq:5672/"}, "AMQP_URL"),
        ({"AMQP_URL": "amqp://mq:99999/"}, "AMQP_URL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith(variable), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pa/ss@db/taskflow",  # an unencoded "/" in the password
        "mysql://app:s3cret@db/taskflow",
    ],
)
def test_a_bad_url_does_not_show_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_URL": url})
    assert "DATABASE_URL" in str(caught.value)
    assert "pa/ss" not in str(caught.value)
    assert "'pa'" not in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_public_masks_passwords_in_urls() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:db-secret@db:5432/taskflow",
            "AMQP_URL": "amqp://rabbit:mq-secret@mq:5672/vhost",
        }
    )
    public = settings.public()
    assert public["database_url"] == "postgresql://app:***@db:5432/taskflow"
    assert public["amqp_url"] == "amqp://rabbit:***@mq:5672/vhost"
    assert "secret" not in repr(public)
    assert public["port"] == 8000
    assert public["data_dir"] == ".taskflow/postgres"
    assert set(public) >= {"host", "processors", "work_min_s", "failure_rate", "lease_s"}


def test_public_names_the_embedded_database() -> None:
    public = Settings().public()
    assert public["database_url"] == "embedded"
    assert public["amqp_url"] == "amqp://guest:***@localhost:5672/"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://db/taskflow", "postgresql://db/taskflow"),
        ("postgresql://app@db/taskflow", "postgresql://app@db/taskflow"),
        ("postgresql://app:p%40ss@db/taskflow", "postgresql://app:***@db/taskflow"),
        ("postgresql://app:@db/taskflow", "postgresql://app:***@db/taskflow"),
        ("postgresql://:secret@db/taskflow", "postgresql://:***@db/taskflow"),
        (
            "postgresql:///taskflow?host=/run/postgresql&password=secret",
            "postgresql:///taskflow?host=/run/postgresql&password=***",
        ),
        (None, None),
        ("", ""),
    ],
)
def test_mask_url(url: str | None, masked: str | None) -> None:
    assert mask_url(url) == masked
