"""`taskflow submit --via amqp`: tasks published from the command line get created."""

from __future__ import annotations

from pathlib import Path

import orjson

from taskflow_bench.harness.environment import variable
from tests.conftest import AMQP_URL
from tests.integration.amqp.support import (
    Broker,
    Client,
    all_tasks,
    wait_for_metric,
    wait_for_tasks,
)
from tests.integration.support import run_taskflow


async def taskflow(queue: str, *args: str) -> tuple[int, str, str]:
    """Run `taskflow ARGS` against the test queue; its exit code, stdout and stderr."""
    return await run_taskflow(
        *args, env={variable("amqp_url"): AMQP_URL, variable("amqp_queue"): queue}
    )


async def test_submit_via_amqp_creates_a_task(amqp_client: Client, broker: Broker) -> None:
    code, out, err = await taskflow(
        broker.queue, "submit", "from the cli", "--payload", '{"n": 1}', "--via", "amqp"
    )
    assert (code, err) == (0, "")
    printed = orjson.loads(out)
    assert printed["queue"] == broker.queue
    assert printed["message_id"]

    [task] = await wait_for_tasks(amqp_client, 1)
    assert (task["title"], task["payload"], task["source"]) == ("from the cli", {"n": 1}, "amqp")


async def test_submit_via_amqp_with_a_key_is_idempotent(
    amqp_client: Client, broker: Broker
) -> None:
    for _ in range(2):
        code, out, _err = await taskflow(
            broker.queue, "submit", "keyed", "--via", "amqp", "--key", "cli-1"
        )
        assert code == 0
        assert orjson.loads(out)["message_id"] == "cli-1"
    await wait_for_metric(amqp_client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    assert [t["title"] for t in await all_tasks(amqp_client)] == ["keyed"]


async def test_submit_count_and_file_via_amqp(
    amqp_client: Client, broker: Broker, tmp_path: Path
) -> None:
    code, out, _err = await taskflow(
        broker.queue, "submit", "many", "--via", "amqp", "--count", "3"
    )
    assert code == 0
    assert orjson.loads(out) == {"via": "amqp", "queue": broker.queue, "published": 3}

    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"title": "line one"}\n\n{"title": "line two", "payload": {"x": 2}}\n')
    code, out, _err = await taskflow(broker.queue, "submit", "--via", "amqp", "--file", str(lines))
    assert code == 0
    assert orjson.loads(out)["published"] == 2

    tasks = await wait_for_tasks(amqp_client, 5)
    assert sorted(t["title"] for t in tasks) == ["line one", "line two", "many", "many", "many"]


async def test_submit_refuses_a_file_with_a_bad_line(broker: Broker, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"title": "fine"}\n{"title": oops}\n')
    code, out, err = await taskflow(broker.queue, "submit", "--via", "amqp", "--file", str(lines))
    assert code == 2
    assert out == ""
    assert "line 2: not valid JSON" in err
    assert await broker.waiting() == 0  # nothing was sent
