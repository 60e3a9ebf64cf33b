"""Retention against the real service: what is deleted, what is kept, and by whom.

Retentions of a few seconds make the pruner run every second, so these tests see it
work in real time; the SQL checks read the database as an operator would. One test
drives the store's prune directly, with finish times set back, for the exact cut-off.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from taskflow import retention
from taskflow.config import Settings
from taskflow.db.store import CreateClaimed, TaskStore
from taskflow.models import Outcome, Status
from taskflow_bench.harness.metrics import metric
from tests.integration.support import wait_until
from tests.unit.helpers import new_task

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Awaitable[Client]]


async def create(client: Client, title: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.post("/tasks", json={"title": title}, headers=headers)
    assert response.status == 201, await response.text()
    task: dict[str, Any] = await response.json()
    return task


async def status_of(client: Client, task_id: str) -> str | None:
    """The task's status, or None once it is gone (404)."""
    response = await client.get(f"/tasks/{task_id}")
    if response.status == 404:
        return None
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return str(body["status"])


async def events_of(db: asyncpg.Connection, ids: list[str]) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM task_events WHERE task_id = ANY($1::uuid[])", ids
    )
    return count


async def test_finished_tasks_go_with_their_history_and_keys_and_the_rest_stays(
    make_client: MakeClient, settings: Settings, db: asyncpg.Connection
) -> None:
    # Finished tasks, written by an instance that keeps everything.
    keeper = await make_client(replace(settings, retention_s=0))
    done = [await create(keeper, f"done-{i}", key=f"key-{i}") for i in range(5)]
    done_ids = [t["id"] for t in done]

    async def all_completed() -> bool:
        return all([await status_of(keeper, i) == "completed" for i in done_ids])

    await wait_until(all_completed)
    await keeper.close()
    assert await events_of(db, done_ids) == 15  # new, in_progress, completed

    # An instance with a retention of 2 s whose one processor stays busy for a minute:
    # its first task stays in_progress, the next ones new.
    client = await make_client(
        replace(settings, retention_s=2, processors=1, work_min_s=60, work_max_s=60)
    )
    running = await create(client, "running")
    await wait_until(lambda: _is(client, running["id"], "in_progress"))
    waiting = [await create(client, f"waiting-{i}") for i in range(3)]

    async def all_gone() -> bool:
        return all([await status_of(client, i) is None for i in done_ids])

    await wait_until(all_gone)
    assert await events_of(db, done_ids) == 0
    assert await metric(client, "taskflow_pruned_tasks_total") == 5
    # The keys went with the tasks: the same key now makes a new task.
    again = await create(client, "done-0", key="key-0")
    assert again["id"] != done_ids[0]

    # Older than the retention by now, but not finished: kept, with their history.
    await asyncio.sleep(3)
    assert await status_of(client, running["id"]) == "in_progress"
    for task in waiting:
        assert await status_of(client, task["id"]) in ("new", "in_progress")
    assert await events_of(db, [running["id"], *(t["id"] for t in waiting)]) >= 5
    assert await metric(client, "taskflow_pruned_tasks_total") == 5


async def _is(client: Client, task_id: str, status: str) -> bool:
    return await status_of(client, task_id) == status


async def test_completed_and_failed_tasks_are_pruned_once_older_than_the_retention(
    make_client: MakeClient, settings: Settings, db: asyncpg.Connection
) -> None:
    client = await make_client(replace(settings, retention_s=3, failure_rate=0.5))
    ids = [(await create(client, f"done-{i}"))["id"] for i in range(40)]

    async def all_finished() -> bool:
        statuses = {await status_of(client, i) for i in ids}
        return statuses <= {"completed", "failed", None}

    await wait_until(all_finished)
    statuses = {await status_of(client, i) for i in ids}
    assert statuses - {None}, "pruned before the retention passed"

    async def none_left() -> bool:
        left: int = await db.fetchval("SELECT count(*) FROM tasks")
        return left == 0

    await wait_until(none_left)
    assert await db.fetchval("SELECT count(*) FROM task_events") == 0
    assert await metric(client, "taskflow_pruned_tasks_total") == 40


async def test_a_retention_of_zero_keeps_everything(
    make_client: MakeClient, settings: Settings
) -> None:
    with structlog.testing.capture_logs() as logs:
        client = await make_client(replace(settings, retention_s=0))
    ids = [(await create(client, f"kept-{i}"))["id"] for i in range(5)]

    async def all_completed() -> bool:
        return all([await status_of(client, i) == "completed" for i in ids])

    await wait_until(all_completed)
    await asyncio.sleep(3)
    assert all([await status_of(client, i) == "completed" for i in ids])
    assert await metric(client, "taskflow_pruned_tasks_total") == 0
    assert [e for e in logs if e["event"] == "retention.disabled"]


PRUNE_LOCK = 7204563210  # taskflow/db/queries.sql, prune_lock


async def test_two_instances_never_prune_at_once(
    make_client: MakeClient,
    settings: Settings,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 600
    maker = await make_client(replace(settings, retention_s=0))
    for i in range(total):
        await create(maker, f"old-{i}")

    async def all_completed() -> bool:
        done: int = await db.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        return done == total

    await wait_until(all_completed)
    # Record when each DELETE on tasks starts and ends, and in which session.
    await db.execute(
        """
        CREATE TABLE test_deletes (pid int, phase text, at timestamptz);
        CREATE FUNCTION test_record_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO test_deletes VALUES (pg_backend_pid(), TG_WHEN, clock_timestamp());
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_delete_start BEFORE DELETE ON tasks
            FOR EACH STATEMENT EXECUTE FUNCTION test_record_delete();
        CREATE TRIGGER test_delete_end AFTER DELETE ON tasks
            FOR EACH STATEMENT EXECUTE FUNCTION test_record_delete();
        """
    )
    # Small batches, so that a run is many batches and the instances meet.
    monkeypatch.setattr(retention, "BATCH_SIZE", 20)
    monkeypatch.setattr(retention, "BATCH_PAUSE_S", 0.01)

    # While another session holds the prune lock, nobody deletes anything.
    async with db.transaction():
        assert await db.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK)
        first = await make_client(replace(settings, retention_s=1))
        second = await make_client(replace(settings, retention_s=1))
        await asyncio.sleep(2.5)  # two runs of each pruner
        assert await db.fetchval("SELECT count(*) FROM test_deletes") == 0
    assert await db.fetchval("SELECT count(*) FROM tasks") == total

    async def none_left() -> bool:
        left: int = await db.fetchval("SELECT count(*) FROM tasks")
        return left == 0

    await wait_until(none_left)
    pruned = [await metric(c, "taskflow_pruned_tasks_total") for c in (first, second)]
    assert sum(pruned) == total

    rows = await db.fetch("SELECT pid, phase, at FROM test_deletes ORDER BY at")
    spans: list[tuple[Any, Any, int]] = []
    starts: dict[int, Any] = {}
    for row in rows:
        if row["phase"] == "BEFORE":
            starts[row["pid"]] = row["at"]
        else:
            spans.append((starts.pop(row["pid"]), row["at"], row["pid"]))
    assert len(spans) >= total // 20
    spans.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start, "two DELETEs ran at once"


async def test_the_prune_takes_only_tasks_finished_before_the_retention_oldest_first(
    db_url: str, db: asyncpg.Connection
) -> None:
    async with TaskStore.connect(db_url, max_size=1) as store:
        created = await store.insert_tasks(
            [new_task(name) for name in ("hours-ago", "an-hour-ago", "just-now", "running")],
            CreateClaimed("owner", 300, 4),
        )
        claims = {c.task_id: c for c in created.claimed}
        ids = {task.title: task.id for task in created.created}
        finished = [ids["hours-ago"], ids["an-hour-ago"], ids["just-now"]]
        outcomes = [Outcome(claims[i], Status.COMPLETED, result={}) for i in finished]
        assert len(await store.finish(outcomes, "owner")) == 3
        # Set the finish times back (a finished row is otherwise immutable: the triggers).
        await db.execute("SET session_replication_role = replica")
        await db.executemany(
            "UPDATE tasks SET finished_at = now() - make_interval(hours => $2) WHERE id = $1",
            [(ids["hours-ago"], 3), (ids["an-hour-ago"], 1)],
        )
        await db.execute("RESET session_replication_role")

        half_an_hour = 1800
        assert await store.prune_finished(half_an_hour, 1) == 1  # the oldest first
        left = {r["title"] for r in await db.fetch("SELECT title FROM tasks")}
        assert left == {"an-hour-ago", "just-now", "running"}
        assert await store.prune_finished(half_an_hour, 10) == 1
        assert await store.prune_finished(half_an_hour, 10) == 0
        left = {r["title"] for r in await db.fetch("SELECT title FROM tasks")}
        assert left == {"just-now", "running"}  # within the retention, or not finished
