"""RabbitMQ going away: the service starts without it, survives cuts, loses nothing.

A TCP proxy of the test's own stands between the service and the shared broker, so
cutting connections touches nobody else's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from taskflow.amqp.state import CONSUMER_STATE
from taskflow.config import Settings
from taskflow_bench.harness.metrics import metric
from tests.conftest import AMQP_URL
from tests.integration.amqp.proxy import AmqpProxy
from tests.integration.amqp.support import (
    WAIT_S,
    Broker,
    Client,
    all_tasks,
    wait_for_consumer,
    wait_for_metric,
    wait_for_tasks,
)
from tests.integration.proxy import TcpProxy

MakeClient = Callable[[Settings], Awaitable[Client]]


@pytest.fixture
async def proxy() -> AsyncIterator[AmqpProxy]:
    """A TCP proxy to the test RabbitMQ on a free local port, listening, that reads the
    AMQP frames going through it.

    Tests take it before the service, so the service stops before the proxy does.
    """
    parts = urlsplit(AMQP_URL)
    relay = AmqpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await relay.start()
    yield relay
    await relay.stop()


def through(settings: Settings, proxy: TcpProxy) -> Settings:
    """`settings` with the broker (guest/guest) reached through `proxy`."""
    return replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")


@dataclass
class _Seen:
    phases: list[str] = field(default_factory=list)
    errors: set[str] = field(default_factory=set)


@asynccontextmanager
async def _phases(client: Client) -> AsyncIterator[_Seen]:
    """Every phase (and `last_error`) of the consumer that lasts a turn of the loop, while
    in the block."""
    state = client.app[CONSUMER_STATE]
    seen = _Seen()

    async def watch() -> None:
        while True:
            if not seen.phases or seen.phases[-1] != state.phase:
                seen.phases.append(state.phase)
            if state.last_error:
                seen.errors.add(state.last_error)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watcher.cancel()


async def _close_consuming_channel(proxy: AmqpProxy, logs: list[MutableMapping[str, Any]]) -> None:
    """Make RabbitMQ close the consuming channel; wait until the consumer consumes again."""
    channel = proxy.break_consuming_channel()
    await proxy.closed(channel, WAIT_S)
    await _events(logs, "consuming from RabbitMQ again", 1)


async def _events(logs: list[MutableMapping[str, Any]], event: str, count: int) -> None:
    """Wait until `event` was logged `count` times."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if sum(e["event"] == event for e in logs) >= count:
                return
            await asyncio.sleep(0.05)


async def test_serves_http_while_rabbitmq_is_down_and_connects_when_it_is_back(
    proxy: TcpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    await proxy.stop()  # its port now refuses connections
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(through(settings, proxy))

        response = await client.post("/tasks", json={"title": "over http"})
        assert response.status == 201
        amqp = await wait_for_consumer(client, "disconnected")  # readiness is still 200
        assert amqp["last_error"]
        assert await metric(client, "taskflow_amqp_connected") == 0
        await _events(logs, "RabbitMQ still unreachable", 2)
    waiting = [e for e in logs if e["event"].startswith("waiting for RabbitMQ")]
    assert len(waiting) == 1  # logged once, not once per attempt

    await proxy.start()
    await wait_for_consumer(client, "consuming")
    assert await metric(client, "taskflow_amqp_connected") == 1
    await broker.publish({"title": "over amqp"})
    tasks = await wait_for_tasks(client, 2)
    assert sorted((t["title"], t["source"]) for t in tasks) == [
        ("over amqp", "amqp"),
        ("over http", "http"),
    ]


async def test_consumer_survives_the_connection_being_cut(
    proxy: TcpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(through(settings, proxy))
        await wait_for_consumer(client, "consuming")
        await broker.publish({"title": "before"})
        await wait_for_tasks(client, 1)

        await proxy.stop()
        amqp = await wait_for_consumer(client, "disconnected")
        assert amqp["last_error"]
        assert await metric(client, "taskflow_amqp_connected") == 0
        await broker.publish({"title": "during"})

        await proxy.start()
        await wait_for_consumer(client, "consuming")
        assert await metric(client, "taskflow_amqp_connected") == 1
        await broker.publish({"title": "after"})

        tasks = await wait_for_tasks(client, 3)
    assert sorted(t["title"] for t in tasks) == ["after", "before", "during"]
    assert {t["source"] for t in tasks} == {"amqp"}
    said = [e["event"] for e in logs]
    assert said.count("RabbitMQ connection lost; reconnecting") == 1
    assert not [e for e in said if e.startswith("RabbitMQ closed the consuming channel")]


async def test_consumer_consumes_again_after_rabbitmq_closed_its_channel(
    proxy: AmqpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(through(settings, proxy))
        await wait_for_consumer(client, "consuming")
        await broker.publish({"title": "before"}, message_id="before")
        await wait_for_tasks(client, 1)

        async with _phases(client) as seen:
            # A protocol error on the consuming channel: RabbitMQ closes that channel
            # alone, and aio-pika opens it again on the same connection.
            await _close_consuming_channel(proxy, logs)
        await broker.publish({"title": "after"}, message_id="after")
        tasks = await wait_for_tasks(client, 2)

    assert seen.phases == ["consuming", "disconnected", "consuming"]  # as readiness said
    assert any("PRECONDITION_FAILED" in error for error in seen.errors)
    (closed,) = [e for e in logs if e["event"].startswith("RabbitMQ closed the consuming")]
    assert "PRECONDITION_FAILED" in closed["reason"]
    assert not [e for e in logs if e["event"].startswith("RabbitMQ connection lost")]
    assert sorted(t["title"] for t in tasks) == ["after", "before"]
    assert proxy.connections == 1  # the connection stayed up
    assert (await wait_for_consumer(client, "consuming"))["last_error"] is None
    await client.close()
    assert await broker.waiting() == 0  # both acked, none given back


async def test_consumer_retries_when_it_cannot_consume_on_the_reopened_channel(
    proxy: AmqpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(through(settings, proxy))
        await wait_for_consumer(client, "consuming")
        async with _phases(client) as seen:
            # The channel is closed; on the reopened one the consumer's first basic.consume
            # names a queue that does not exist, so RabbitMQ refuses it (and closes it again).
            proxy.misdirect_next_consume("taskflow-test-no-such-queue")
            await _close_consuming_channel(proxy, logs)
        await broker.publish({"title": "after"}, message_id="after")
        tasks = await wait_for_tasks(client, 1)

    assert [t["title"] for t in tasks] == ["after"]
    assert seen.phases == ["consuming", "disconnected", "consuming"]  # as readiness said
    assert any("NOT_FOUND" in error for error in seen.errors)
    (failed,) = [e for e in logs if e["event"] == "could not consume again; retrying"]
    assert "NOT_FOUND" in failed["error"]
    assert (await wait_for_consumer(client, "consuming"))["last_error"] is None
    assert proxy.connections == 1


async def test_redelivery_after_the_consumer_died_before_acking_makes_one_task(
    proxy: TcpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    client = await make_amqp_client(through(settings, proxy))
    await wait_for_consumer(client, "consuming")
    # The service gets the message and commits its task, but its ack never arrives:
    # the proxy drops everything the service sends once the message went through.
    proxy.freeze_after(b"commit-then-vanish")
    await broker.publish({"title": "commit-then-vanish"}, message_id="once-only")
    await wait_for_tasks(client, 1)

    await proxy.stop()  # the broker sees the consumer die with the message unacked
    await proxy.start()

    await wait_for_metric(client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    tasks = await all_tasks(client)
    assert [t["title"] for t in tasks] == ["commit-then-vanish"]
    assert await metric(client, "taskflow_amqp_messages_total", outcome="created") == 1
    await client.close()
    assert await broker.waiting() == 0


async def test_consumer_declares_its_queue_again_after_the_queue_was_deleted(
    make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(settings)
        await wait_for_consumer(client, "consuming")
        await broker.publish({"title": "before"})
        await wait_for_tasks(client, 1)

        # RabbitMQ cancels the consumers of a deleted queue (basic.cancel).
        await broker.channel.queue_delete(broker.queue, if_unused=False, if_empty=False)
        await _events(logs, "consuming from RabbitMQ again", 1)

    cancelled = [e for e in logs if e["event"].startswith("RabbitMQ cancelled the consumer")]
    assert len(cancelled) == 1
    await wait_for_consumer(client, "consuming")
    assert await metric(client, "taskflow_amqp_connected") == 1
    await broker.publish({"title": "after"})
    tasks = await wait_for_tasks(client, 2)
    assert sorted(t["title"] for t in tasks) == ["after", "before"]
