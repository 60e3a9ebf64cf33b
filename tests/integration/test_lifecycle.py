"""A task's life through the real pipeline and PostgreSQL."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow_bench.harness.tasks import wait_terminal

Client = TestClient[web.Request, web.Application]


async def test_created_task_is_processed_to_completion(client: Client) -> None:
    response = await client.post("/tasks", json={"title": "resize", "payload": {"w": 100}})
    assert response.status == 201
    task = await response.json()
    assert response.headers["Location"] == f"/tasks/{task['id']}"
    assert task["status"] == "new"
    assert task["source"] == "http"
    assert task["payload"] == {"w": 100}
    assert task["attempts"] == 0

    done = await wait_terminal(client, task["id"])
    assert done["status"] == "completed"
    assert done["attempts"] == 1
    assert done["result"] is not None
    assert done["error"] is None
    assert done["started_at"] is not None
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]

    events = await (await client.get(f"/tasks/{task['id']}/events")).json()
    assert [e["status"] for e in events["items"]] == ["new", "in_progress", "completed"]
    times = [e["at"] for e in events["items"]]
    assert times == sorted(times)
