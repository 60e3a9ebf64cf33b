"""`/metrics` after a known workload: every counter moved by exactly what was done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow.app import create_app
from taskflow.config import Settings
from taskflow_bench.harness.metrics import label_values, scrape, value, wait_for
from taskflow_bench.harness.tasks import wait_terminal

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]

N = 12
TEMPLATES = {"/tasks", "/tasks/{task_id}", "/tasks/{task_id}/events", "/metrics", "unmatched"}


@pytest.fixture
def start(aiohttp_client: AiohttpClient, db_url: str) -> Callable[[Settings], Awaitable[Client]]:
    """Start the app with the statistics gauges refreshed every 0.1 s."""

    async def start(settings: Settings) -> Client:
        return await aiohttp_client(create_app(settings, poll_s=0.05, stats_s=0.1))

    return start


@pytest.mark.parametrize(
    ("failure_rate", "outcome", "other"),
    [(0.0, "completed", "failed"), (1.0, "failed", "completed")],
)
async def test_counters_match_a_known_workload(
    start: Callable[[Settings], Awaitable[Client]],
    settings: Settings,
    failure_rate: float,
    outcome: str,
    other: str,
) -> None:
    client = await start(replace(settings, failure_rate=failure_rate))
    responses = await asyncio.gather(
        *(client.post("/tasks", json={"title": f"t{i}"}) for i in range(N))
    )
    assert [r.status for r in responses] == [201] * N
    ids = [(await r.json())["id"] for r in responses]
    done = [await wait_terminal(client, task_id) for task_id in ids]
    assert {t["status"] for t in done} == {outcome}

    m = await wait_for(
        client, lambda s: value(s, "taskflow_tasks", status=outcome) == N, timeout=15
    )
    assert value(m, "taskflow_tasks_created_total", source="http") == N
    assert value(m, "taskflow_tasks_created_total", source="amqp") == 0
    for status in ("new", "in_progress", outcome):
        assert value(m, "taskflow_status_changes_total", status=status) == N, status
    assert value(m, "taskflow_status_changes_total", status=other) == 0
    assert value(m, "taskflow_processing_seconds_count", status=outcome) == N
    assert value(m, "taskflow_processing_seconds_count", status=other) == 0

    # Every task was inserted, claimed and finished once, in batches of any size.
    for operation in ("insert", "finish"):
        assert value(m, "taskflow_db_batch_size_sum", operation=operation) == N, operation
        batches = value(m, "taskflow_db_batch_size_count", operation=operation)
        assert 1 <= batches <= N
        assert value(m, "taskflow_db_batch_seconds_count", operation=operation) == batches
    claimed = sum(
        value(m, "taskflow_db_batch_size_sum", operation=op) for op in ("claim", "claim_new")
    )
    assert claimed == N

    # The gauges of the whole table, and of this instance's queues.
    assert value(m, "taskflow_tasks", status="new") == 0
    assert value(m, "taskflow_tasks", status="in_progress") == 0
    assert value(m, "taskflow_tasks", status=other) == 0
    assert value(m, "taskflow_oldest_new_task_age_seconds") == 0
    assert value(m, "taskflow_processors_busy") == 0
    assert value(m, "taskflow_queue_capacity", queue="intake") == settings.queue_size
    assert value(m, "taskflow_queue_capacity", queue="processors") == settings.processors
    for queue in ("intake", "dispatch", "processors", "status_writer"):
        assert value(m, "taskflow_queue_depth", queue=queue) == 0, queue
    assert value(m, "taskflow_db_up") == 1
    assert value(m, "taskflow_lease_recoveries_total") == 0
    assert value(m, "taskflow_fenced_writes_total") == 0
    assert value(m, "process_resident_memory_bytes") > 0  # the process collector is there

    # HTTP latency by route template and status code.
    created = "taskflow_http_request_duration_seconds_count"
    assert value(m, created, route="/tasks", method="POST", code="201") == N
    assert value(m, created, route="/tasks/{task_id}", method="GET", code="200") >= N


async def test_http_labels_are_route_templates(client: Client) -> None:
    unknown = "7d1c3a52-52a4-4b8e-8f5e-3f0d8c1f3b7e"
    assert (await client.get(f"/tasks/{unknown}")).status == 404
    assert (await client.get(f"/tasks/{unknown}/events")).status == 404
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.request("PROPFIND", "/tasks")).status == 405
    assert (await client.get("/tasks?limit=0")).status == 400

    m = await scrape(client)
    name = "taskflow_http_request_duration_seconds_count"
    assert value(m, name, route="/tasks/{task_id}", method="GET", code="404") == 1
    assert value(m, name, route="/tasks/{task_id}/events", method="GET", code="404") == 1
    assert value(m, name, route="unmatched", method="GET", code="404") == 1
    assert value(m, name, route="unmatched", method="other", code="405") == 1
    assert value(m, name, route="/tasks", method="GET", code="400") == 1
    assert label_values(m, name, "route") <= TEMPLATES  # no raw path, no task id


async def test_backlog_gauges(
    start: Callable[[Settings], Awaitable[Client]], settings: Settings
) -> None:
    # One processor, busy for a minute: the first task runs, the others wait as `new`.
    client = await start(replace(settings, processors=1, work_min_s=60.0, work_max_s=60.0))
    for i in range(3):
        assert (await client.post("/tasks", json={"title": f"t{i}"})).status == 201

    m = await wait_for(
        client,
        lambda s: (
            value(s, "taskflow_tasks", status="new") == 2
            and value(s, "taskflow_tasks", status="in_progress") == 1
            and value(s, "taskflow_oldest_new_task_age_seconds") > 0
        ),
        timeout=15,
    )
    assert value(m, "taskflow_processors_busy") == 1
    assert value(m, "taskflow_status_changes_total", status="in_progress") == 1
    assert value(m, "taskflow_queue_capacity", queue="processors") == 1
