"""A bad value of the scale settings stops `taskflow serve` with one line naming it."""

from __future__ import annotations

import pytest

from tests.integration.support import run_taskflow


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKFLOW_RETENTION", "1w"),
        ("TASKFLOW_RETENTION", "7"),
        ("TASKFLOW_RETENTION", "-5m"),
        ("TASKFLOW_AMQP_QUEUE_TYPE", "stream"),
        ("TASKFLOW_DB_POOL_SIZE", "0"),
        ("TASKFLOW_LISTEN_DATABASE_URL", "redis://localhost/0"),
    ],
)
async def test_a_bad_value_stops_serve_with_one_line(variable: str, value: str) -> None:
    env = {variable: value, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    code, out, err = await run_taskflow("serve", env=env)
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0, err
    assert err.startswith(f"taskflow: configuration error: {variable}")
