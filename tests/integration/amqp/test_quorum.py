"""`TASKFLOW_AMQP_QUEUE_TYPE=quorum`: the same intake on quorum queues, and clear conflicts.

A single RabbitMQ node runs quorum queues (with one replica), so these run against the
local broker like the other AMQP tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aio_pika
import asyncpg
import pytest
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from taskflow.amqp.queues import QueueTypeConflict, declare_queue
from taskflow.app import create_app
from taskflow.config import Settings
from taskflow.submit import publish_one
from taskflow_bench.harness.metrics import metric
from tests.conftest import AMQP_URL, AiohttpClient
from tests.integration.amqp.support import (
    Broker,
    Client,
    all_tasks,
    wait_for_consumer,
    wait_for_metric,
    wait_for_tasks,
)
from tests.integration.support import settle


@pytest.fixture
def quorum_settings(settings: Settings) -> Settings:
    """The test settings with quorum queues."""
    return replace(settings, amqp_queue_type="quorum")


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractConnection]:
    """A connection of the test's own; the test queues are deleted after the test."""
    connection = await aio_pika.connect(AMQP_URL, timeout=30)
    try:
        yield connection
        cleanup = await connection.channel()
        for name in (settings.amqp_queue, f"{settings.amqp_queue}.dead"):
            await cleanup.queue_delete(name, if_unused=False, if_empty=False, timeout=30)
    finally:
        await connection.close()


@pytest.fixture
async def channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel on the test's connection."""
    return await connection.channel()


@pytest.fixture
async def quorum_broker(channel: AbstractChannel, quorum_settings: Settings) -> Broker:
    """The test queue and its dead-letter queue, declared as quorum queues."""
    broker = Broker(channel, quorum_settings.amqp_queue)
    for name in (broker.queue, broker.dead):
        await declare_queue(channel, name, "quorum")
    return broker


@pytest.fixture
async def quorum_client(
    quorum_broker: Broker, quorum_settings: Settings, aiohttp_client: AiohttpClient
) -> Client:
    """The service consuming the quorum queue (it stops before the queues are deleted)."""
    client = await aiohttp_client(create_app(quorum_settings, amqp=True, poll_s=0.05))
    await wait_for_consumer(client, "consuming")
    return client


async def _queue_type(connection: AbstractConnection, name: str) -> str:
    """The type of an existing queue, found by what RabbitMQ refuses to redeclare it as."""
    try:
        await declare_queue(await connection.channel(), name, "classic")
    except QueueTypeConflict as exc:
        return exc.existing
    return "classic"


async def test_the_service_declares_quorum_queues_and_turns_messages_into_tasks(
    quorum_settings: Settings, aiohttp_client: AiohttpClient, connection: AbstractConnection
) -> None:
    client = await aiohttp_client(create_app(quorum_settings, amqp=True, poll_s=0.05))
    await wait_for_consumer(client, "consuming")
    assert await _queue_type(connection, quorum_settings.amqp_queue) == "quorum"
    assert await _queue_type(connection, f"{quorum_settings.amqp_queue}.dead") == "quorum"

    broker = Broker(await connection.channel(), quorum_settings.amqp_queue)
    await broker.publish({"title": "replicated"}, message_id="q-1")
    await broker.publish({"title": "replicated"}, message_id="q-1")
    [task] = await wait_for_tasks(client, 1)
    await settle(client)
    done = await (await client.get(f"/tasks/{task['id']}")).json()
    assert (done["title"], done["source"], done["status"]) == ("replicated", "amqp", "completed")
    await wait_for_metric(client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    await client.close()
    assert await broker.waiting() == 0


async def test_a_bad_message_is_dead_lettered_to_the_quorum_dead_letter_queue(
    quorum_client: Client, quorum_broker: Broker
) -> None:
    await quorum_broker.publish(b'{"title": "", "colour": "red"}', message_id="bad-q")
    await quorum_broker.publish({"title": "after the bad one"})
    [task] = await wait_for_tasks(quorum_client, 1)
    assert task["title"] == "after the bad one"
    dead = await quorum_broker.channel.get_queue(quorum_broker.dead, ensure=False)
    found = await dead.get(no_ack=True, timeout=30)
    assert found.message_id == "bad-q"
    assert found.headers["x-taskflow-error"] == "validation_failed"
    assert (
        await metric(quorum_client, "taskflow_amqp_dead_lettered_total", reason="validation_failed")
        == 1
    )


async def test_a_message_whose_commit_fails_comes_back_from_the_quorum_queue(
    quorum_client: Client, quorum_broker: Broker, db_url: str
) -> None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.execute(
            """
            CREATE FUNCTION test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'inserts refused by the test'; END $$;
            CREATE TRIGGER test_refuse_insert BEFORE INSERT ON tasks
                FOR EACH ROW EXECUTE FUNCTION test_refuse_insert();
            """
        )
        await quorum_broker.publish({"title": "patient"}, message_id="patient-q")
        await wait_for_metric(quorum_client, 2, "taskflow_amqp_messages_total", outcome="requeued")
        assert await all_tasks(quorum_client) == []
        await conn.execute("DROP TRIGGER test_refuse_insert ON tasks")
    finally:
        await conn.close()

    [task] = await wait_for_tasks(quorum_client, 1)
    assert (task["title"], task["source"]) == ("patient", "amqp")
    await quorum_client.close()
    assert await quorum_broker.waiting() == 0


async def test_an_existing_classic_queue_stops_the_quorum_consumer_with_one_clear_error(
    quorum_settings: Settings, aiohttp_client: AiohttpClient, channel: AbstractChannel
) -> None:
    await channel.declare_queue(quorum_settings.amqp_queue, durable=True)  # classic, by hand
    with structlog.testing.capture_logs() as logs:
        client = await aiohttp_client(create_app(quorum_settings, amqp=True, poll_s=0.05))
        amqp = await wait_for_consumer(client, "stopped")
        message = amqp["last_error"]
        assert "exists as a classic queue" in message
        assert "TASKFLOW_AMQP_QUEUE_TYPE=quorum" in message
        assert await metric(client, "taskflow_amqp_connected") == 0

        # HTTP intake still works, and the consumer does not retry in a loop: longer
        # than its retry interval later, it is still stopped and said so once.
        response = await client.post("/tasks", json={"title": "over http"})
        assert response.status == 201
        await wait_for_tasks(client, 1)
        await asyncio.sleep(3)
        assert (await wait_for_consumer(client, "stopped"))["last_error"] == message
    conflicts = [e for e in logs if e["event"] == "amqp.queue_type_conflict"]
    assert len(conflicts) == 1
    assert (conflicts[0]["existing"], conflicts[0]["wanted"]) == ("classic", "quorum")
    assert conflicts[0]["log_level"] == "error"


async def test_an_existing_quorum_queue_is_a_conflict_for_a_classic_service(
    settings: Settings, aiohttp_client: AiohttpClient, channel: AbstractChannel
) -> None:
    await declare_queue(channel, f"{settings.amqp_queue}.dead", "quorum")
    client = await aiohttp_client(create_app(settings, amqp=True, poll_s=0.05))
    amqp = await wait_for_consumer(client, "stopped")
    assert "exists as a quorum queue but TASKFLOW_AMQP_QUEUE_TYPE=classic" in amqp["last_error"]


async def test_submit_via_amqp_names_both_types_on_a_conflict(
    quorum_settings: Settings, channel: AbstractChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    await channel.declare_queue(quorum_settings.amqp_queue, durable=True)
    code = await publish_one(
        AMQP_URL, quorum_settings.amqp_queue, b'{"title": "x"}', None, queue_type="quorum"
    )
    assert code == 1
    error = capsys.readouterr().err
    assert "exists as a classic queue but TASKFLOW_AMQP_QUEUE_TYPE=quorum" in error


async def test_messages_unacked_at_shutdown_are_redelivered_from_the_quorum_queue(
    quorum_broker: Broker, quorum_settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    first = await aiohttp_client(create_app(quorum_settings, amqp=True, poll_s=0.05))
    await wait_for_consumer(first, "consuming")
    titles = [f"drain-{i}" for i in range(2000)]
    for start in range(0, len(titles), 500):
        await asyncio.gather(
            *(quorum_broker.publish({"title": t}) for t in titles[start : start + 500])
        )
    await wait_for_metric(first, 1, "taskflow_amqp_messages_total", outcome="created")
    await first.close()  # stops while messages are in flight: those return to the queue

    second = await aiohttp_client(create_app(quorum_settings, amqp=True, poll_s=0.05))
    tasks = await wait_for_tasks(second, len(titles))
    assert sorted(t["title"] for t in tasks) == sorted(titles)  # each exactly once
    await second.close()
    assert await quorum_broker.waiting() == 0
