"""`taskflow serve` with JSON logs: every line is an event, and one task can be followed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout
from aiohttp.test_utils import unused_port

from taskflow.config import Settings


async def wait_until_ready(session: ClientSession, base: str) -> None:
    """Poll `/health/ready` until the service answers 200."""
    async with asyncio.timeout(60):
        while True:
            try:
                async with session.get(f"{base}/health/ready") as response:
                    if response.status == 200:
                        return
            except ClientError:
                pass
            await asyncio.sleep(0.1)


async def create_and_finish(session: ClientSession, base: str) -> dict[str, Any]:
    """Create one task and poll it until it is terminal."""
    async with session.post(f"{base}/tasks", json={"title": "follow me"}) as response:
        assert response.status == 201
        task: dict[str, Any] = await response.json()
    async with asyncio.timeout(30):
        while task["status"] not in ("completed", "failed"):
            await asyncio.sleep(0.05)
            async with session.get(f"{base}/tasks/{task['id']}") as response:
                task = await response.json()
    return task


async def test_json_logs_follow_a_task_and_log_access_as_events(
    db_url: str, settings: Settings
) -> None:
    port = unused_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "AMQP_URL": settings.amqp_url,
        "TASKFLOW_AMQP_QUEUE": settings.amqp_queue,
        "TASKFLOW_HOST": "127.0.0.1",
        "TASKFLOW_PORT": str(port),
        "TASKFLOW_PROCESSORS": "4",
        "TASKFLOW_WORK_MIN_S": "0",
        "TASKFLOW_WORK_MAX_S": "0",
        "TASKFLOW_FAILURE_RATE": "0",
        "TASKFLOW_SHUTDOWN_GRACE_S": "2",
        "TASKFLOW_LOG_FORMAT": "json",
        "TASKFLOW_LOG_LEVEL": "info",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskflow", "serve", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            await wait_until_ready(session, base)
            task = await create_and_finish(session, base)
            async with session.get(f"{base}/tasks/{task['id']}/events") as response:
                assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert out == b""  # nothing printed besides the log

    lines = err.decode().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line is one JSON object
    for event in events:
        assert isinstance(event, dict)
        assert {"event", "level", "timestamp"} <= event.keys(), event
        assert event["timestamp"].endswith("Z")
    assert not [e for e in events if e.get("logger") == "aiohttp.access"]  # no text access log

    access = [e for e in events if e["event"] == "http request"]
    post = next(e for e in access if e["method"] == "POST")
    assert post["path"] == "/tasks"
    assert post["route"] == "/tasks"
    assert post["status"] == 201
    assert post["duration_s"] >= 0
    assert post["remote"] == "127.0.0.1"
    history = next(e for e in access if e["path"].endswith("/events"))
    assert history["route"] == "/tasks/{task_id}/events"

    # Intake → claim → terminal write, each with the task id, from the same instance.
    followed = [e for e in events if e.get("task_id") == task["id"]]
    assert [(e["event"], e.get("status")) for e in followed] == [
        ("task created", None),
        ("status changed", "in_progress"),
        ("status changed", "completed"),
    ]
    assert followed[0]["source"] == "http"
    assert followed[1]["attempt"] == followed[2]["attempt"] == 1
    assert followed[2]["duration_s"] >= 0
    (instance,) = {e["instance"] for e in followed}
    assert instance.startswith("taskflow-")
    assert [e["event"] for e in events][-1] == "taskflow stopped"
