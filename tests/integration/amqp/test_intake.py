"""Tasks created by publishing to RabbitMQ: acked after commit, never twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from taskflow.config import Settings
from taskflow_bench.harness.metrics import metric
from taskflow_bench.harness.tasks import wait_terminal
from tests.integration.amqp.support import (
    Broker,
    Client,
    all_tasks,
    readiness,
    returned_at_stop,
    wait_for_consumer,
    wait_for_metric,
    wait_for_tasks,
)
from tests.unit.helpers import finished_futures

MakeClient = Callable[[Settings], Awaitable[Client]]


async def test_published_message_becomes_an_amqp_task_that_finishes(
    amqp_client: Client, broker: Broker
) -> None:
    body = {"title": "resize", "description": "from a queue", "payload": {"w": 100}}
    await broker.publish(body, message_id="resize-1", content_type="application/json")

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["source"] == "amqp"
    assert (task["title"], task["description"], task["payload"]) == (
        "resize",
        "from a queue",
        {"w": 100},
    )
    done = await wait_terminal(amqp_client, task["id"])
    assert done["status"] == "completed"
    events = await (await amqp_client.get(f"/tasks/{task['id']}/events")).json()
    assert [e["status"] for e in events["items"]] == ["new", "in_progress", "completed"]

    report = await readiness(amqp_client)
    assert report["amqp"] == {"state": "consuming", "queue": broker.queue, "last_error": None}
    assert await metric(amqp_client, "taskflow_amqp_connected") == 1
    assert await metric(amqp_client, "taskflow_amqp_messages_total", outcome="created") == 1
    assert await broker.waiting() == 0


async def test_same_message_id_twice_makes_one_task(amqp_client: Client, broker: Broker) -> None:
    body = {"title": "once", "payload": {"n": 1}}
    await broker.publish(body, message_id="order-42")
    await broker.publish(body, message_id="order-42")

    await wait_for_metric(amqp_client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    assert await metric(amqp_client, "taskflow_amqp_messages_total", outcome="created") == 1
    tasks = await all_tasks(amqp_client)
    assert [t["title"] for t in tasks] == ["once"]


async def test_message_id_and_idempotency_key_share_one_namespace(
    amqp_client: Client, broker: Broker
) -> None:
    body: dict[str, Any] = {"title": "either way", "description": None, "payload": {}}
    response = await amqp_client.post("/tasks", json=body, headers={"Idempotency-Key": "shared-7"})
    assert response.status == 201
    created = await response.json()

    await broker.publish(body, message_id="shared-7")

    await wait_for_metric(amqp_client, 1, "taskflow_amqp_messages_total", outcome="duplicate")
    assert [t["id"] for t in await all_tasks(amqp_client)] == [created["id"]]


async def test_5000_confirmed_messages_make_exactly_5000_tasks(
    amqp_client: Client, broker: Broker
) -> None:
    before = finished_futures()
    titles = [f"load-{i}" for i in range(5000)]
    for start in range(0, len(titles), 500):  # each publish waits for its confirm
        await asyncio.gather(*(broker.publish({"title": t}) for t in titles[start : start + 500]))

    await wait_for_metric(amqp_client, 5000, "taskflow_amqp_messages_total", outcome="created")
    tasks = await all_tasks(amqp_client)
    assert len(tasks) == 5000
    assert sorted(t["title"] for t in tasks) == sorted(titles)
    assert {t["source"] for t in tasks} == {"amqp"}
    kept = finished_futures() - before  # nothing is kept per message once it is settled
    assert kept < 1000, f"{kept} futures of the 5000 settled messages are still referenced"

    assert await returned_at_stop(amqp_client, broker) == 0


async def test_shutdown_acks_what_was_committed_and_returns_the_rest(
    make_amqp_client: MakeClient, settings: Settings, broker: Broker
) -> None:
    first = await make_amqp_client(settings)
    await wait_for_consumer(first, "consuming")
    titles = [f"drain-{i}" for i in range(3000)]
    for start in range(0, len(titles), 500):
        await asyncio.gather(*(broker.publish({"title": t}) for t in titles[start : start + 500]))
    await wait_for_metric(first, 1, "taskflow_amqp_messages_total", outcome="created")
    await first.close()  # stops while messages are in flight

    second = await make_amqp_client(settings)
    tasks = await wait_for_tasks(second, 3000)
    assert sorted(t["title"] for t in tasks) == sorted(titles)
    # Every message whose task was committed was acked before the first one stopped.
    assert await metric(second, "taskflow_amqp_messages_total", outcome="duplicate") == 0
    await second.close()
    assert await broker.waiting() == 0


async def _fail_inserts(db_url: str, fail: bool) -> None:
    """Make every INSERT into the test database's tasks fail (or work again)."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        if fail:
            await conn.execute(
                """
                CREATE FUNCTION test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'inserts refused by the test'; END $$;
                CREATE TRIGGER test_refuse_insert BEFORE INSERT ON tasks
                    FOR EACH ROW EXECUTE FUNCTION test_refuse_insert();
                """
            )
        else:
            await conn.execute(
                "DROP TRIGGER test_refuse_insert ON tasks; DROP FUNCTION test_refuse_insert();"
            )
    finally:
        await conn.close()


async def test_a_message_whose_commit_fails_is_not_acked_and_comes_back(
    amqp_client: Client, broker: Broker, db_url: str
) -> None:
    await _fail_inserts(db_url, fail=True)
    try:
        await broker.publish({"title": "patient"}, message_id="patient-1")
        await wait_for_metric(amqp_client, 2, "taskflow_amqp_messages_total", outcome="requeued")
        assert await all_tasks(amqp_client) == []
    finally:
        await _fail_inserts(db_url, fail=False)

    [task] = await wait_for_tasks(amqp_client, 1)
    assert (task["title"], task["source"]) == ("patient", "amqp")
    assert await metric(amqp_client, "taskflow_amqp_messages_total", outcome="created") == 1
    assert await returned_at_stop(amqp_client, broker) == 0
