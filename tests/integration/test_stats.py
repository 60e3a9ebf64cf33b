"""GET /stats: counts per status, rates from the instances' heartbeats, live instances."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg

from taskflow.config import Settings
from taskflow.dashboard import REGISTRY
from tests.integration.support import Client, MakeClient, create, settle

STATUSES = {"new", "in_progress", "completed", "failed", "cancelled"}


async def stats(client: Client) -> dict[str, Any]:
    response = await client.get("/stats")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_count(client: Client, status: str, n: int) -> None:
    """Wait until `GET /stats` counts `n` tasks in `status`."""
    async with asyncio.timeout(10):
        while True:
            if (await stats(client))["counts"][status] == n:
                return
            await asyncio.sleep(0.05)


async def test_stats_counts_a_workload_and_its_rates(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, failure_rate=0.5))
    before = await stats(client)
    assert set(before) == {"counts", "rates", "instances"}
    assert before["counts"] == dict.fromkeys(STATUSES, 0)
    assert before["rates"] == dict.fromkeys(("created", "completed", "failed", "cancelled"), 0)

    await asyncio.gather(*(create(client, {"title": f"job {i}"}) for i in range(40)))
    await settle(client)
    await client.app[REGISTRY].beat_once()  # report the changes now, not in 5 s

    after = await stats(client)
    counts = after["counts"]
    assert set(counts) == STATUSES
    assert counts["completed"] + counts["failed"] == 40
    assert counts["completed"] > 0
    assert counts["failed"] > 0
    assert counts["new"] == counts["in_progress"] == counts["cancelled"] == 0
    rates = after["rates"]
    assert rates["created"] == round(40 / 60, 3)
    assert rates["completed"] == round(counts["completed"] / 60, 3)
    assert rates["failed"] == round(counts["failed"] / 60, 3)
    assert rates["cancelled"] == 0

    series = await client.get("/stats/rates")
    assert series.status == 200
    body = await series.json()
    assert body["bucket_s"] == 15
    assert 59 <= len(body["items"]) <= 61  # 15 minutes of 15 s buckets
    fields = {"at", "created", "completed", "failed", "cancelled"}
    assert all(set(item) == fields for item in body["items"])


async def test_instances_appear_and_disappear(
    make_client: MakeClient, settings: Settings, db_url: str
) -> None:
    first = await make_client(settings)
    (only,) = (await stats(first))["instances"]
    assert only["id"] == first.app[REGISTRY].instance_id
    assert only["processors"] == settings.processors
    assert only["busy"] == 0
    assert only["queue_capacity"] == settings.queue_size
    assert set(only) == {
        "id",
        "started_at",
        "last_seen_at",
        "processors",
        "busy",
        "queue_depth",
        "queue_capacity",
    }

    second = await make_client(replace(settings, processors=3))
    listed = {i["id"]: i for i in (await stats(first))["instances"]}
    assert len(listed) == 2
    assert sorted(i["processors"] for i in listed.values()) == [3, settings.processors]

    await second.close()  # a stopping instance removes itself
    assert [i["id"] for i in (await stats(first))["instances"]] == [only["id"]]


async def test_silent_instances_are_hidden_then_forgotten(client: Client, db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO instances (id, started_at, last_seen_at, processors) VALUES "
            "('silent', now() - interval '1 hour', now() - interval '16 seconds', 10), "
            "('long-gone', now() - interval '1 day', now() - interval '11 minutes', 10)"
        )
        ids = [i["id"] for i in (await stats(client))["instances"]]
        assert "silent" not in ids  # three 5 s heartbeats missed
        assert "long-gone" not in ids

        await client.app[REGISTRY].beat_once()
        left = {r["id"] for r in await conn.fetch("SELECT id FROM instances")}
        assert "long-gone" not in left  # deleted by another instance's heartbeat
        assert "silent" in left  # hidden, but kept a while in case it comes back
    finally:
        await conn.close()


async def test_busy_processors_are_reported(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(replace(settings, work_min_s=30.0, work_max_s=30.0, processors=4))
    await asyncio.gather(*(create(client, {"title": f"slow {i}"}) for i in range(6)))
    await wait_count(client, "in_progress", 4)
    await client.app[REGISTRY].beat_once()
    (instance,) = (await stats(client))["instances"]
    assert instance["busy"] == 4
    assert instance["processors"] == 4


async def test_cancels_count_in_the_rates(make_client: MakeClient, settings: Settings) -> None:
    # One processor, busy for a minute: one task runs, the others wait as `new`.
    client = await make_client(replace(settings, processors=1, work_min_s=60.0, work_max_s=60.0))
    running = await create(client, {"title": "running"})
    waiting = [await create(client, {"title": f"waiting {i}"}) for i in range(3)]
    await wait_count(client, "in_progress", 1)
    response = await client.post("/tasks/cancel", json={"ids": [t["id"] for t in waiting]})
    assert response.status == 200
    response = await client.post(f"/tasks/{running['id']}/cancel")
    assert response.status == 202
    await wait_count(client, "cancelled", 4)
    await client.app[REGISTRY].beat_once()
    after = await stats(client)
    assert after["rates"]["cancelled"] == round(4 / 60, 3)
    assert after["counts"]["new"] == after["counts"]["in_progress"] == 0
