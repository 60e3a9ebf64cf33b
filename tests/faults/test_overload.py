"""Overload: a flood of creates against a small intake queue.

Every answer is 201 or 503 with Retry-After (never a hang, a reset or a 500), every 201
task exists and finishes, a 503 created nothing, and memory stays bounded because the
queue is: nothing piles up in the process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp

from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import snapshot, wait_all_terminal

FLOOD = 5000
CONCURRENCY = 300
QUEUE_SIZE = 50
PAYLOAD = {"blob": "x" * 8192}
MIB = 1024 * 1024


async def _sample_rss(service: Service, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], service.rss_bytes())
        await asyncio.sleep(0.05)


async def test_flood_gets_201_or_503_and_memory_stays_bounded(fleet: Fleet) -> None:
    service = await fleet.start(
        "service",
        queue_size=QUEUE_SIZE,
        processors=20,
        work_min_s=0.0,
        work_max_s=0.05,
    )
    baseline = service.rss_bytes()
    peak = [baseline]
    sampler = asyncio.create_task(_sample_rss(service, peak))
    answers: Counter[str] = Counter()
    created: list[uuid.UUID] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        async with (
            gate,
            session.post(
                f"{service.url}/tasks", json={"title": f"flood-{n}", "payload": PAYLOAD}
            ) as response,
        ):
            body = await response.json()
            if response.status == 201:
                created.append(uuid.UUID(body["id"]))
            else:
                assert response.status == 503, body
                assert body["error"]["code"] == "overloaded", body
                assert int(response.headers["Retry-After"]) > 0
            answers[str(response.status)] += 1

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            await asyncio.gather(*(one(session, n) for n in range(FLOOD)))
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

    assert answers["201"] + answers["503"] == FLOOD
    assert answers["503"] > 0, "the flood never filled the queue"
    assert answers["201"] > 0
    await wait_all_terminal(fleet.db_url, len(created), 120)
    rows = await snapshot(fleet.db_url)
    assert set(rows) == set(created)  # a 503 created nothing
    for row in rows.values():
        assert row.history == row.expected_history(), row
    metrics = await service.metrics()
    assert value(metrics, "taskflow_intake_rejected_total", reason="full") == answers["503"]
    growth = peak[0] - baseline
    assert growth < 150 * MIB, f"RSS grew by {growth / MIB:.0f} MiB"
    assert service.running
    print(
        f"\nflood of {FLOOD} creates ({CONCURRENCY} at once, 8 KiB payloads, "
        f"queue of {QUEUE_SIZE}): {dict(answers)}; "
        f"RSS {baseline / MIB:.0f} MiB → peak {peak[0] / MIB:.0f} MiB"
    )
