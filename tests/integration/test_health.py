"""`/health/live` and `/health/ready`, with PostgreSQL there and cut off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow.app import create_app
from taskflow.config import Settings
from taskflow_bench.harness.metrics import value, wait_for
from tests.integration.proxy import TcpProxy

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


async def health(client: Client, which: str) -> tuple[int, dict[str, Any], str | None]:
    """Status, body and Retry-After of one health route."""
    response = await client.get(f"/health/{which}")
    body: dict[str, Any] = await response.json()
    return response.status, body, response.headers.get("Retry-After")


async def wait_ready(client: Client, status: int) -> dict[str, Any]:
    """Poll `/health/ready` until it answers `status`."""
    async with asyncio.timeout(30):
        while True:
            code, body, _ = await health(client, "ready")
            if code == status:
                return body
            await asyncio.sleep(0.05)


@pytest.fixture
async def db_proxy(db_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test PostgreSQL."""
    parts = urlsplit(db_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_ready_and_live_when_all_is_well(client: Client) -> None:
    status, body, retry = await health(client, "live")
    assert (status, body, retry) == (200, {"status": "ok"}, None)
    status, body, retry = await health(client, "ready")
    assert status == 200
    assert retry is None
    assert body["status"] == "ready"
    assert body["database"] == {"mode": "external", "ok": True}
    assert body["pipeline"] == {"alive": True, "accepting": True}
    assert body["amqp"]["state"]  # the consumer's state, whatever it is: no effect on ready


async def test_ready_follows_postgresql_and_live_does_not(
    db_url: str, db_proxy: TcpProxy, settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    parts = urlsplit(db_url)
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{db_proxy.port}"))
    client = await aiohttp_client(
        create_app(replace(settings, database_url=through_proxy), poll_s=0.05, stats_s=0.1)
    )
    await wait_ready(client, 200)

    await db_proxy.stop()
    body = await wait_ready(client, 503)
    _, _, retry = await health(client, "ready")
    assert retry is not None
    assert int(retry) > 0
    assert body["status"] == "not_ready"
    assert body["database"]["ok"] is False
    assert body["database"]["error"]
    assert body["pipeline"] == {"alive": True, "accepting": True}
    assert await health(client, "live") == (200, {"status": "ok"}, None)
    created = await client.post("/tasks", json={"title": "while down"})
    assert created.status == 503
    assert created.headers["Retry-After"]
    assert (await created.json())["error"]["code"] == "database_unavailable"
    await wait_for(client, lambda m: value(m, "taskflow_db_up") == 0, timeout=30)

    await db_proxy.start()
    body = await wait_ready(client, 200)
    assert body["database"] == {"mode": "external", "ok": True}
    assert (await client.post("/tasks", json={"title": "back"})).status == 201
