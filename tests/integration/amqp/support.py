"""The test's side of RabbitMQ and of the service: publish, read dead letters, wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow_bench.harness import metrics
from tests.conftest import AMQP_URL

Client = TestClient[web.Request, web.Application]
WAIT_S = 60.0


class Broker:
    """The test queue and its dead-letter queue, seen from a publisher's connection."""

    def __init__(self, channel: AbstractChannel, queue: str) -> None:
        self.channel = channel
        self.queue = queue
        self.dead = f"{queue}.dead"

    async def publish(self, body: bytes | dict[str, Any], **properties: Any) -> None:
        """Publish `body` (bytes, or a dict sent as JSON) and wait for the broker's confirm."""
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        await self.channel.default_exchange.publish(
            aio_pika.Message(raw, **properties), routing_key=self.queue, timeout=WAIT_S
        )

    async def dead_letters(self, count: int) -> list[AbstractIncomingMessage]:
        """Take `count` messages from the dead-letter queue, waiting for them to arrive."""
        queue = await self.channel.declare_queue(self.dead, durable=True)
        found: list[AbstractIncomingMessage] = []
        async with asyncio.timeout(WAIT_S):
            while len(found) < count:
                message = await queue.get(no_ack=True, fail=False, timeout=WAIT_S)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    found.append(message)
        return found

    async def waiting(self, name: str | None = None) -> int:
        """Messages ready in a queue (default: the test queue), unacked ones not counted."""
        queue = await self.channel.declare_queue(name or self.queue, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count


@asynccontextmanager
async def open_broker(queue: str, delete_after: bool) -> AsyncIterator[Broker]:
    """A publisher's connection straight to RabbitMQ, with `queue` and its dead-letter
    queue declared up front (and deleted afterwards if `delete_after`)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=30)
    try:
        channel = await connection.channel()
        handle = Broker(channel, queue)
        for name in (handle.queue, handle.dead):
            await channel.declare_queue(name, durable=True, timeout=30)
        yield handle
        if delete_after:
            for name in (handle.queue, handle.dead):
                await channel.queue_delete(name, if_unused=False, if_empty=False, timeout=30)
    finally:
        await connection.close()


async def returned_at_stop(client: Client, broker: Broker) -> int:
    """Stop the service; how many messages came back to the queue (those left unacked)."""
    await client.close()
    return await broker.waiting()


async def readiness(client: Client) -> dict[str, Any]:
    """The body of GET /health/ready (asserting it is 200)."""
    response = await client.get("/health/ready")
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def wait_for_consumer(client: Client, state: str) -> dict[str, Any]:
    """Poll readiness until the consumer is in `state`; return its report."""
    async with asyncio.timeout(WAIT_S):
        while True:
            amqp: dict[str, Any] = (await readiness(client))["amqp"]
            if amqp["state"] == state:
                return amqp
            await asyncio.sleep(0.05)


async def all_tasks(client: Client) -> list[dict[str, Any]]:
    """Every task, following the pages of GET /tasks."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/tasks", params=params)
        assert response.status == 200
        page = await response.json()
        tasks.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks


async def wait_for_tasks(client: Client, count: int) -> list[dict[str, Any]]:
    """Poll until there are at least `count` tasks; return them all."""
    async with asyncio.timeout(WAIT_S):
        while True:
            tasks = await all_tasks(client)
            if len(tasks) >= count:
                return tasks
            await asyncio.sleep(0.05)


async def wait_for_metric(client: Client, value: float, name: str, **labels: str) -> None:
    """Poll /metrics until the sample reaches `value`."""
    await metrics.wait_for(client, lambda s: metrics.value(s, name, **labels) >= value, WAIT_S)
