"""Issue 2's done-criterion: 1,000 concurrent creates, all processed, in few INSERTs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from taskflow.config import Settings
from taskflow_bench.harness.metrics import metric
from tests.integration.support import Client, MakeClient, settle

COUNT = 1000


async def events(client: Client, task_id: str) -> list[str]:
    response = await client.get(f"/tasks/{task_id}/events")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return [event["status"] for event in body["items"]]


async def test_a_thousand_concurrent_creates_are_all_processed_in_few_inserts(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, failure_rate=0.2))
    responses = await asyncio.gather(
        *(
            client.post("/tasks", json={"title": f"task {i}", "payload": {"i": i}})
            for i in range(COUNT)
        )
    )
    assert [r.status for r in responses] == [201] * COUNT
    ids = [(await r.json())["id"] for r in responses]
    assert len(set(ids)) == COUNT

    await settle(client, timeout=90)

    listing = await (await client.get("/tasks?limit=1000")).json()
    assert sorted(t["id"] for t in listing["items"]) == sorted(ids)
    assert listing["next_cursor"] is None
    assert {t["status"] for t in listing["items"]} <= {"completed", "failed"}
    assert all(t["attempts"] == 1 for t in listing["items"])

    histories = []
    for start in range(0, COUNT, 100):
        histories += await asyncio.gather(*(events(client, i) for i in ids[start : start + 100]))
    by_status = {t["id"]: t["status"] for t in listing["items"]}
    for task_id, history in zip(ids, histories, strict=True):
        assert history == ["new", "in_progress", by_status[task_id]], (task_id, history)

    inserts = await metric(client, "taskflow_db_batch_size_count", operation="insert")
    rows = await metric(client, "taskflow_db_batch_size_sum", operation="insert")
    assert rows == COUNT
    assert 1 <= inserts < 500, f"{inserts:.0f} INSERT statements for {COUNT} creates"
    assert await metric(client, "taskflow_tasks_created_total", source="http") == COUNT
