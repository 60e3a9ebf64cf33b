"""The command line with tokens: `submit --token` / TASKFLOW_TOKEN, and bad token settings."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from taskflow.config import Role, Settings
from tests.integration.support import MakeClient, run_taskflow

WRITE = "cli-write-token-5b7c"
READ = "cli-read-token-8e2d"


async def test_submit_sends_the_token(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(
        replace(settings, api_tokens=((Role.WRITE, WRITE), (Role.READ, READ)))
    )
    url = str(client.make_url("/")).rstrip("/")
    blank = {"TASKFLOW_TOKEN": ""}

    code, out, _ = await run_taskflow("submit", "no-token", "--url", url, env=blank)
    assert code == 1
    assert orjson.loads(out)["error"]["code"] == "unauthorized"

    code, out, _ = await run_taskflow("submit", "flag", "--url", url, "--token", WRITE, env=blank)
    assert code == 0, out
    assert orjson.loads(out)["title"] == "flag"

    code, out, _ = await run_taskflow("submit", "env", "--url", url, env={"TASKFLOW_TOKEN": WRITE})
    assert code == 0, out

    code, out, _ = await run_taskflow(
        "submit", "many", "--url", url, "--count", "3", env={"TASKFLOW_TOKEN": WRITE}
    )
    assert code == 0, out
    assert orjson.loads(out)["created"] == 3

    code, out, _ = await run_taskflow("submit", "reader", "--url", url, "--token", READ)
    assert code == 1
    assert orjson.loads(out)["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TASKFLOW_API_TOKENS": "root:secret-tok-1"}, "TASKFLOW_API_TOKENS"),
        ({"TASKFLOW_API_TOKENS": "read:"}, "TASKFLOW_API_TOKENS"),
        (
            {"TASKFLOW_API_TOKENS": "read:secret-tok-1,admin:secret-tok-1"},
            "TASKFLOW_API_TOKENS",
        ),
        ({"TASKFLOW_API_TOKENS_FILE": "/nonexistent/tokens"}, "TASKFLOW_API_TOKENS_FILE"),
        ({"TASKFLOW_METRICS_TOKEN": "secret tok"}, "TASKFLOW_METRICS_TOKEN"),
    ],
    ids=["unknown-role", "empty-token", "two-roles", "missing-file", "bad-metrics-token"],
)
async def test_a_bad_token_setting_stops_start_up_with_one_line(
    env: dict[str, str], variable: str
) -> None:
    code, out, err = await run_taskflow("serve", env=env)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"taskflow: configuration error: {variable}")
    assert "secret" not in err
    assert out == ""
