"""RabbitMQ going away: the service starts without it, survives cuts, loses nothing.

A TCP proxy of the test's own stands between the service and the shared broker, so
cutting connections touches nobody else's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import structlog

from taskflow.config import Settings
from tests.conftest import AMQP_URL
from tests.integration.amqp.support import (
    Broker,
    Client,
    all_tasks,
    metric,
    wait_for_consumer,
    wait_for_metric,
    wait_for_tasks,
)
from tests.integration.amqp.tcp_proxy import TcpProxy

MakeClient = Callable[[Settings], Awaitable[Client]]


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A TCP proxy to the test RabbitMQ on a free local port.

    Tests take it before the service, so the service stops before the proxy does.
    """
    parts = urlsplit(AMQP_URL)
    relay = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await relay.start()
    yield relay
    await relay.close()


async def test_serves_http_while_rabbitmq_is_down_and_connects_when_it_is_back(
    proxy: TcpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    proxy.accepting = False
    with structlog.testing.capture_logs() as logs:
        client = await make_amqp_client(replace(settings, amqp_url=proxy.amqp_url()))

        response = await client.post("/tasks", json={"title": "over http"})
        assert response.status == 201
        amqp = await wait_for_consumer(client, "disconnected")  # readiness is still 200
        assert amqp["last_error"]
        assert await metric(client, "taskflow_amqp_connected") == 0
        await proxy.wait_refused(3)
    waiting = [e for e in logs if e["event"].startswith("waiting for RabbitMQ")]
    assert len(waiting) == 1  # logged once, not once per attempt

    proxy.accepting = True
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
    client = await make_amqp_client(replace(settings, amqp_url=proxy.amqp_url()))
    await wait_for_consumer(client, "consuming")
    await broker.publish({"title": "before"})
    await wait_for_tasks(client, 1)

    proxy.accepting = False
    await proxy.cut()
    amqp = await wait_for_consumer(client, "disconnected")
    assert amqp["last_error"]
    assert await metric(client, "taskflow_amqp_connected") == 0
    await broker.publish({"title": "during"})

    proxy.accepting = True
    await wait_for_consumer(client, "consuming")
    assert await metric(client, "taskflow_amqp_connected") == 1
    await broker.publish({"title": "after"})

    tasks = await wait_for_tasks(client, 3)
    assert sorted(t["title"] for t in tasks) == ["after", "before", "during"]
    assert {t["source"] for t in tasks} == {"amqp"}


async def test_redelivery_after_the_consumer_died_before_acking_makes_one_task(
    proxy: TcpProxy, make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    client = await make_amqp_client(replace(settings, amqp_url=proxy.amqp_url()))
    await wait_for_consumer(client, "consuming")
    # The service gets the message and commits its task, but its ack never arrives:
    # the proxy drops everything the service sends once the message went through.
    proxy.freeze_after(b"commit-then-vanish")
    await broker.publish({"title": "commit-then-vanish"}, message_id="once-only")
    await wait_for_tasks(client, 1)

    await proxy.cut()  # the broker sees the consumer die with the message unacked

    await wait_for_metric(client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    tasks = await all_tasks(client)
    assert [t["title"] for t in tasks] == ["commit-then-vanish"]
    assert await metric(client, "taskflow_amqp_messages_total", outcome="created") == 1
    await client.close()
    assert await broker.waiting() == 0
