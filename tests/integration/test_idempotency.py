"""Idempotency-Key over HTTP: one key names at most one task, whatever the concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import ClientResponse

from taskflow.db.store import TaskStore
from taskflow.models import NewTask, Source
from taskflow_bench.harness.tasks import wait_terminal
from tests.integration.support import Client, assert_error


async def post(client: Client, body: dict[str, Any], key: str) -> ClientResponse:
    return await client.post("/tasks", json=body, headers={"Idempotency-Key": key})


async def all_tasks(client: Client) -> list[dict[str, Any]]:
    response = await client.get("/tasks?limit=1000")
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_a_repeat_returns_the_first_task_with_200(client: Client) -> None:
    body = {"title": "resize", "payload": {"w": 100}}
    first = await post(client, body, "order-1")
    assert first.status == 201
    task = await first.json()

    again = await post(client, body, "order-1")
    assert again.status == 200
    assert (await again.json())["id"] == task["id"]
    assert again.headers["Location"] == f"/tasks/{task['id']}"
    assert [t["id"] for t in await all_tasks(client)] == [task["id"]]


async def test_a_repeat_after_processing_returns_the_task_as_it_is_now(client: Client) -> None:
    first = await (await post(client, {"title": "resize"}, "order-2")).json()
    done = await wait_terminal(client, first["id"])
    again = await post(client, {"title": "resize"}, "order-2")
    assert again.status == 200
    assert await again.json() == done


async def test_twenty_concurrent_requests_with_one_key_make_one_task(client: Client) -> None:
    body = {"title": "charge card", "payload": {"amount": 100}}
    responses = await asyncio.gather(*(post(client, body, "payment-42") for _ in range(20)))
    statuses = [r.status for r in responses]
    ids = {(await r.json())["id"] for r in responses}

    assert set(statuses) <= {200, 201}, statuses
    assert statuses.count(201) == 1
    assert len(ids) == 1
    assert [t["id"] for t in await all_tasks(client)] == list(ids)
    done = await wait_terminal(client, ids.pop())
    events = await (await client.get(f"/tasks/{done['id']}/events")).json()
    assert [e["status"] for e in events["items"]] == ["new", "in_progress", "completed"]


async def test_concurrent_requests_with_one_key_and_two_bodies(client: Client) -> None:
    """Whichever body wins, its repeats get the task and the other body gets 409."""
    bodies = [{"title": "a"}, {"title": "b"}] * 10
    responses = await asyncio.gather(*(post(client, b, "contested") for b in bodies))
    [task] = await all_tasks(client)
    for body, response in zip(bodies, responses, strict=True):
        if body["title"] == task["title"]:
            assert response.status in (200, 201)
            assert (await response.json())["id"] == task["id"]
        else:
            await assert_error(response, 409, "idempotency_conflict")
    assert [r.status for r in responses].count(201) == 1


async def test_the_same_key_with_another_body_is_409(client: Client) -> None:
    original = {"title": "resize", "description": "d", "payload": {"w": 100}}
    task = await (await post(client, original, "k")).json()
    for changed in (
        {**original, "title": "crop"},
        {**original, "description": "other"},
        {**original, "description": None},
        {**original, "payload": {"w": 101}},
        {**original, "payload": {}},
    ):
        details = await assert_error(await post(client, changed, "k"), 409, "idempotency_conflict")
        assert details["task_id"] == task["id"]
    assert len(await all_tasks(client)) == 1


async def test_equivalent_bodies_are_the_same_request(client: Client) -> None:
    first = await post(client, {"title": "x", "payload": {"a": 1, "b": [1, 2]}}, "k")
    assert first.status == 201
    task_id = (await first.json())["id"]
    for same in (
        {"payload": {"b": [1, 2], "a": 1}, "title": "x"},
        {"title": "x", "description": None, "payload": {"a": 1, "b": [1, 2]}},
    ):
        again = await post(client, same, "k")
        assert again.status == 200
        assert (await again.json())["id"] == task_id
    assert (await post(client, {"title": "y"}, "k2")).status == 201
    assert (await post(client, {"title": "y"}, "k3")).status == 201
    assert len(await all_tasks(client)) == 3


async def test_absent_fields_equal_their_defaults(client: Client) -> None:
    first = await post(client, {"title": "x"}, "defaults")
    again = await post(client, {"title": "x", "description": None, "payload": {}}, "defaults")
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]


async def test_keys_are_case_sensitive_and_may_be_200_characters(client: Client) -> None:
    assert (await post(client, {"title": "x"}, "Key")).status == 201
    assert (await post(client, {"title": "x"}, "key")).status == 201
    assert (await post(client, {"title": "x"}, "k" * 200)).status == 201
    utf8_key = "clé-😀".encode().decode("latin-1")  # sent as the UTF-8 bytes of the key
    assert (await post(client, {"title": "x"}, utf8_key)).status == 201
    assert len(await all_tasks(client)) == 4


async def test_without_a_key_every_request_is_a_new_task(client: Client) -> None:
    responses = await asyncio.gather(
        *(client.post("/tasks", json={"title": "x"}) for _ in range(5))
    )
    assert [r.status for r in responses] == [201] * 5
    assert len({(await r.json())["id"] for r in responses}) == 5


async def test_the_create_works_with_a_key_index_of_only_the_keyed_tasks(
    db: asyncpg.Connection, db_url: str
) -> None:
    # A later migration may index only the tasks that have a key (README, "PostgreSQL's
    # cost per task"); the create of this version must work on such a database.
    await db.execute(
        "ALTER TABLE tasks DROP CONSTRAINT tasks_idempotency_key_key;"
        " CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )

    def batch() -> list[NewTask]:
        return [
            NewTask("keyed", None, {}, Source.HTTP, "k-1"),
            NewTask("free", None, {}, Source.HTTP),
        ]

    async with TaskStore.connect(db_url) as store:
        first = await store.insert_tasks(batch())
        again = await store.insert_tasks(batch())
    assert [t.title for t in first.created] == ["keyed", "free"]
    assert [t.title for t in again.created] == ["free"]
    assert again.existing["k-1"][0].id == first.created[0].id
    assert await db.fetchval("SELECT count(*) FROM tasks") == 3


async def test_two_instances_creating_the_same_keys_in_opposite_orders_do_not_deadlock(
    db: asyncpg.Connection, db_url: str
) -> None:
    # Two instances (two intakes, each with its own batch) take creates with the same keys
    # in different orders, as a client retrying a burst through another instance would
    # send them. An INSERT ... ON CONFLICT waits for the other transaction's uncommitted
    # key; taken in opposite orders that is a deadlock, and PostgreSQL fails a whole batch.
    keys = [f"burst-{n:04d}" for n in range(400)]

    def batch(order: list[str]) -> list[NewTask]:
        return [NewTask("burst", None, {"key": key}, Source.AMQP, key) for key in order]

    async with TaskStore.connect(db_url) as one, TaskStore.connect(db_url) as two:
        for _ in range(3):
            await db.execute("DELETE FROM tasks")
            first, second = await asyncio.gather(
                one.insert_tasks(batch(keys)), two.insert_tasks(batch(keys[::-1]))
            )
            assert len(first.created) + len(second.created) == len(keys)
            assert len(first.existing) + len(second.existing) == len(keys)
            assert await db.fetchval("SELECT count(DISTINCT idempotency_key) FROM tasks") == 400
