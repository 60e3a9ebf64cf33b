"""A RabbitMQ outage, made with a TCP proxy between the service and the broker.

Messages are flowing when the broker goes away, some delivered and not yet acked. HTTP
goes on as before; the consumer reconnects by itself; every message becomes exactly one
task, processed once, and nothing is left in the queue or dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import create_tasks, snapshot, wait_all_terminal
from tests.integration.amqp.support import Broker, open_broker
from tests.integration.proxy import TcpProxy

PER_PHASE = 200


@pytest.fixture
async def broker(fleet: Fleet) -> AsyncIterator[Broker]:
    """A publisher's connection straight to RabbitMQ (not through the proxy)."""
    # The fleet deletes the queues when it closes.
    async with open_broker(fleet.amqp_queue, delete_after=False) as handle:
        yield handle


async def _readiness(fleet: Fleet, service: Service) -> dict[str, Any]:
    async with fleet.session.get(f"{service.url}/health/ready") as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body  # RabbitMQ never affects readiness
        return body


async def _wait_amqp(fleet: Fleet, service: Service, consuming: bool) -> None:
    async with asyncio.timeout(60):
        while True:
            state = (await _readiness(fleet, service))["amqp"]["state"]
            connected = value((await service.metrics()), "taskflow_amqp_connected")
            if (state == "consuming") == consuming and connected == float(consuming):
                return
            await asyncio.sleep(0.1)


async def _publish(broker: Broker, first: int) -> None:
    for n in range(first, first + PER_PHASE):
        await broker.publish({"title": f"message {n}"}, message_id=f"m-{n}")


async def test_rabbitmq_outage_loses_and_duplicates_nothing(
    fleet: Fleet, amqp_proxy: tuple[TcpProxy, str], broker: Broker
) -> None:
    proxy, proxied_url = amqp_proxy
    service = await fleet.start(
        "service",
        amqp_url=proxied_url,
        processors=50,
        work_min_s=0.0,
        work_max_s=0.05,
    )
    await _wait_amqp(fleet, service, consuming=True)

    await _publish(broker, 0)
    await proxy.stop()  # while those are being consumed: some delivered, not yet acked
    await _wait_amqp(fleet, service, consuming=False)
    await _publish(broker, PER_PHASE)  # they wait in the broker
    http = await create_tasks(fleet.session, service.url, 20)  # HTTP is unaffected

    await proxy.start()
    await _wait_amqp(fleet, service, consuming=True)
    await _publish(broker, 2 * PER_PHASE)

    total = 3 * PER_PHASE + len(http)
    await wait_all_terminal(fleet.db_url, total, 90)
    rows = await snapshot(fleet.db_url)
    for row in rows.values():
        assert row.attempts == 1, row
        assert row.history == row.expected_history(), row
    conn = await asyncpg.connect(fleet.db_url, timeout=10)
    try:
        keys = await conn.fetch("SELECT idempotency_key, source FROM tasks WHERE source = 'amqp'")
    finally:
        await conn.close(timeout=10)
    assert sorted(r["idempotency_key"] for r in keys) == sorted(
        f"m-{n}" for n in range(3 * PER_PHASE)
    )
    assert await broker.waiting() == 0
    assert await broker.waiting(broker.dead) == 0
    metrics = await service.metrics()
    created = value(metrics, "taskflow_tasks_created_total", source="amqp")
    assert created == 3 * PER_PHASE
    duplicates = value(metrics, "taskflow_amqp_messages_total", outcome="duplicate")
    print(
        f"\nRabbitMQ cut while consuming: {3 * PER_PHASE} messages → {created:.0f} tasks, "
        f"{duplicates:.0f} redeliveries recognised as duplicates"
    )
