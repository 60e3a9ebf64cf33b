"""`TASKFLOW_DB_POOL_SIZE` bounds the connections an instance opens, whatever the load."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow.config import Settings
from tests.conftest import ADMIN_URL

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Awaitable[Client]]
TASKS = 600
CONCURRENCY = 60


async def _sample_connections(database: str, seen: list[int], stop: asyncio.Event) -> None:
    """Record, every few milliseconds, how many sessions are open on `database`."""
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)  # on another database: not counted
    try:
        while not stop.is_set():
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
            seen.append(int(count))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.005)
    finally:
        await admin.close()


async def _finished(client: Client) -> int:
    response = await client.get("/tasks", params={"status": ["completed"], "limit": "1000"})
    return len((await response.json())["items"])


async def test_pool_size_bounds_the_connections_under_concurrent_load(
    make_client: MakeClient, settings: Settings, db_url: str
) -> None:
    pool_size = 3
    settings = replace(settings, db_pool_size=pool_size, work_min_s=0.01, work_max_s=0.05)
    database = urlsplit(db_url).path.lstrip("/")
    client = await make_client(settings)

    seen: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_connections(database, seen, stop), name="sampler")
    queue = iter(range(TASKS))

    async def post_and_read() -> None:
        # Creates are batched into few statements; reads take a connection each.
        for i in queue:
            response = await client.post("/tasks", json={"title": f"load-{i}"})
            assert response.status == 201
            task_id = (await response.json())["id"]
            response = await client.get(f"/tasks/{task_id}")
            assert response.status == 200
            response = await client.get("/tasks", params={"limit": "200"})
            assert response.status == 200

    try:
        await asyncio.gather(*(post_and_read() for _ in range(CONCURRENCY)))
        async with asyncio.timeout(60):
            while True:
                if await _finished(client) == TASKS:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await sampler

    # The pool, plus the one connection that LISTENs for new tasks.
    assert max(seen) <= pool_size + 1, max(seen)
    assert max(seen) >= pool_size  # the load did fill the pool: the bound was tested
