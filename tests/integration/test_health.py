"""The operator endpoints: liveness, readiness and metrics."""

from __future__ import annotations

from tests.integration.support import Client, create, wait_terminal


async def test_live_is_200_while_the_pipeline_runs(client: Client) -> None:
    response = await client.get("/health/live")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_ready_is_200_with_the_database_ok(client: Client) -> None:
    response = await client.get("/health/ready")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ready"
    assert body["database"]["ok"] is True
    assert body["database"]["mode"] == "external"
    assert body["pipeline"] == {"alive": True, "accepting": True}
    assert "state" in body["amqp"]
    assert "Retry-After" not in response.headers


async def test_metrics_are_prometheus_text_with_the_pipeline_series(client: Client) -> None:
    task = await create(client, {"title": "counted"})
    await wait_terminal(client, task["id"])
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    for series in (
        'taskflow_tasks_created_total{source="http"} 1.0',
        'taskflow_status_changes_total{status="completed"} 1.0',
        'taskflow_db_batch_size_count{operation="insert"} 1.0',
        'taskflow_queue_capacity{queue="intake"}',
        "taskflow_processors_busy",
        "taskflow_db_up 1.0",
    ):
        assert series in text, series
