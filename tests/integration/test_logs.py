"""`taskflow serve` with JSON logs: every line is an event, and one task can be followed."""

from __future__ import annotations

import signal

from taskflow.config import Settings
from taskflow_bench.harness import events
from taskflow_bench.harness.broker import delete_queues
from taskflow_bench.harness.environment import service_environment
from taskflow_bench.harness.service import RAW, Service
from taskflow_bench.harness.tasks import wait_terminal


async def test_json_logs_follow_a_task_and_log_access_as_events(
    db_url: str, settings: Settings
) -> None:
    env = service_environment(
        {
            "database_url": db_url,
            "amqp_url": settings.amqp_url,
            "amqp_queue": settings.amqp_queue,
            "host": "127.0.0.1",
            "processors": 4,
            "work_min_s": 0,
            "work_max_s": 0,
            "failure_rate": 0,
            "shutdown_grace_s": 2,
            "log_format": "json",
            "log_level": "info",
        }
    )
    service = await Service.start("serve", env)
    try:
        await service.wait_ready()
        async with service.client() as http:
            async with http.post("/tasks", json={"title": "follow me"}) as response:
                assert response.status == 201
                created = await response.json()
            task = await wait_terminal(http, created["id"])
            async with http.get(f"/tasks/{task['id']}/events") as response:
                assert response.status == 200
        code = await service.stop(signal.SIGTERM)
    finally:
        await service.kill()
        # The service declared the test's queue pair on the real broker: leave nothing.
        await delete_queues(settings.amqp_url, [settings.amqp_queue])
    assert code == 0, service.output
    assert service.printed == []  # nothing printed besides the log

    assert not service.events(RAW)  # every line is one JSON object
    logs = service.logs
    for event in logs:
        assert isinstance(event, dict)
        assert {"event", "level", "timestamp"} <= event.keys(), event
        assert event["timestamp"].endswith("Z")
    assert not [e for e in logs if e.get("logger") == "aiohttp.access"]  # no text access log

    access = service.events(events.HTTP_REQUEST)
    post = next(e for e in access if e["method"] == "POST")
    assert post["path"] == "/tasks"
    assert post["route"] == "/tasks"
    assert post["status"] == 201
    assert post["duration_s"] >= 0
    assert post["remote"] == "127.0.0.1"
    history = next(e for e in access if e["path"].endswith("/events"))
    assert history["route"] == "/tasks/{task_id}/events"

    # Intake → claim → terminal write, each with the task id, from the same instance.
    followed = service.events(task_id=task["id"])
    assert [(e["event"], e.get("status")) for e in followed] == [
        (events.TASK_CREATED, None),
        (events.STATUS_CHANGED, "in_progress"),
        (events.STATUS_CHANGED, "completed"),
    ]
    assert followed[0]["source"] == "http"
    assert followed[1]["attempt"] == followed[2]["attempt"] == 1
    assert followed[2]["duration_s"] >= 0
    (instance,) = {e["instance"] for e in followed}
    assert instance.startswith("taskflow-")
    assert logs[-1]["event"] == events.TASKFLOW_STOPPED
