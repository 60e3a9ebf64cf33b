"""PostgreSQL killing the service's connections mid-query never kills an actor."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow.actors.component import PIPELINE
from taskflow_bench.harness.tasks import wait_terminal
from tests.conftest import ADMIN_URL

Client = TestClient[web.Request, web.Application]


async def _kill_backends(database: str, rounds: int) -> int:
    """Terminate every connection to `database`, `rounds` times; return how many died."""
    killed = 0
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        for _ in range(rounds):
            killed += len(
                await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            )
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
    return killed


async def test_killed_connections_leave_every_actor_alive(client: Client, db_url: str) -> None:
    database = urlsplit(db_url).path.lstrip("/")

    async def create_many() -> list[int]:
        statuses = []
        for i in range(200):
            response = await client.post("/tasks", json={"title": f"t{i}"})
            statuses.append(response.status)
        return statuses

    statuses, killed = await asyncio.gather(create_many(), _kill_backends(database, 60))

    assert killed > 0
    assert set(statuses) <= {201, 503}, statuses
    assert client.app[PIPELINE].alive
    live = await client.get("/health/live")
    assert live.status == 200
    # Once the kills stop, creating and processing works again.
    async with asyncio.timeout(30):
        while True:
            response = await client.post("/tasks", json={"title": "after"})
            if response.status == 201:
                break
            await asyncio.sleep(0.2)
    task = await response.json()
    done = await wait_terminal(client, task["id"], timeout=30)
    assert done["status"] == "completed"
