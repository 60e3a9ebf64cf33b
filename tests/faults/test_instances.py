"""Several instances on one PostgreSQL share the work and never run an attempt twice."""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections import Counter

import asyncpg
import pytest

from taskflow.db.migrate import latest_version, migrate
from taskflow.db.store import TaskStore
from taskflow.models import NewTask, Source
from taskflow_bench.harness import events
from taskflow_bench.harness.metrics import value
from tests.faults.conftest import Fleet
from tests.faults.tasks import create_one, create_tasks, snapshot, wait_all_terminal
from tests.integration.test_migrations import LEGACY_DATA, LEGACY_SCHEMA

BACKLOG = 1500
PER_INSTANCE_HTTP = 100


async def _insert_backlog(db_url: str, count: int) -> None:
    async with TaskStore.connect(db_url, max_size=1) as store:
        for start in range(0, count, 500):
            batch = [
                NewTask(f"backlog-{n}", None, {"n": n}, Source.HTTP)
                for n in range(start, min(start + 500, count))
            ]
            await store.insert_tasks(batch)


async def test_starting_next_to_running_instances_locks_no_table(db_url: str) -> None:
    # A running instance's statements hold row locks on `tasks`; a second instance
    # starting now must not wait for them (nor deadlock with them, as the DDL did).
    # (The test database is current: the template was built by the migrations.)
    running = await asyncpg.connect(db_url, timeout=10)
    try:
        async with running.transaction():
            await running.execute("LOCK TABLE tasks, task_events IN ROW EXCLUSIVE MODE")
            async with asyncio.timeout(10):
                assert await migrate(db_url) == []
    finally:
        await running.close(timeout=10)


@pytest.mark.parametrize("instances", [2, 3])
async def test_instances_drain_one_backlog_once(fleet: Fleet, instances: int) -> None:
    await _insert_backlog(fleet.db_url, BACKLOG)
    launched = [
        await fleet.launch(
            f"web-{n}",
            processors=20,
            work_min_s=0.0,
            work_max_s=0.05,
            lease_s=30,
        )
        for n in range(instances)
    ]
    await asyncio.gather(*(s.wait_ready() for s in launched))
    # More tasks arrive on every instance while the backlog drains.
    await asyncio.gather(
        *(create_tasks(fleet.session, s.url, PER_INSTANCE_HTTP, 10) for s in launched)
    )
    total = BACKLOG + instances * PER_INSTANCE_HTTP
    await wait_all_terminal(fleet.db_url, total, 120)

    rows = await snapshot(fleet.db_url)
    assert len(rows) == total
    for row in rows.values():
        assert row.attempts == 1, row
        assert row.history == row.expected_history(), row
    # Each attempt was started by exactly one instance, and every instance did some.
    started: Counter[str] = Counter()
    per_instance = []
    for service in launched:
        ids = [e["task_id"] for e in service.events(events.STATUS_CHANGED, status="in_progress")]
        started.update(ids)
        per_instance.append(len(ids))
    assert set(started) == {str(i) for i in rows}
    assert max(started.values()) == 1
    assert all(n > 0 for n in per_instance), per_instance
    recoveries = [value((await s.metrics()), "taskflow_lease_recoveries_total") for s in launched]
    assert recoveries == [0.0] * instances
    print(f"\n{instances} instances: attempts per instance {per_instance}")


async def test_claims_wake_across_instances(fleet: Fleet) -> None:
    # `busy` has one processor, kept busy; tasks created on it must be claimed by `idle`,
    # woken by the NOTIFY of the insert rather than by its once-a-second poll.
    busy = await fleet.start("busy", processors=1, work_min_s=60, work_max_s=60)
    await create_one(fleet.session, busy.url, "occupy the only processor")
    idle = await fleet.start("idle", processors=4, work_min_s=0, work_max_s=0)
    ids: list[uuid.UUID] = []
    for n in range(30):
        status, body, _ = await create_one(fleet.session, busy.url, f"wake-{n}")
        assert status == 201
        ids.append(uuid.UUID(body["id"]))
        await asyncio.sleep(0.1)
    async with asyncio.timeout(60):
        while True:
            rows = await snapshot(fleet.db_url)
            if all(rows[i].terminal for i in ids):
                break
            await asyncio.sleep(0.1)
    started_by_idle = {
        e["task_id"] for e in idle.events(events.STATUS_CHANGED, status="in_progress")
    }
    assert started_by_idle == {str(i) for i in ids}
    conn_rows = await snapshot(fleet.db_url)
    delays = sorted(
        (conn_rows[i].history_at[1] - conn_rows[i].history_at[0]).total_seconds() for i in ids
    )
    print(
        f"\ncross-instance claim delay over {len(delays)} tasks: "
        f"median {statistics.median(delays) * 1000:.0f} ms, "
        f"p90 {delays[int(len(delays) * 0.9)] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms "
        "(the poll interval is 1000 ms)"
    )


async def test_two_instances_starting_at_once_upgrade_a_database_of_the_version_before(
    fleet: Fleet,
) -> None:
    # The test database, as taskflow before migrations left it, with a task still waiting.
    conn = await asyncpg.connect(fleet.db_url, timeout=10)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await conn.execute(LEGACY_SCHEMA + LEGACY_DATA)
        # Its holder (an instance of the old version) is gone: its lease has run out.
        await conn.execute("UPDATE tasks SET lease_expires_at = now() WHERE status = 'in_progress'")
    finally:
        await conn.close(timeout=10)
    launched = [
        await fleet.launch(name, work_min_s=0.0, work_max_s=0.0, lease_s=2)
        for name in ("web-a", "web-b")
    ]
    await asyncio.gather(*(s.wait_ready() for s in launched))
    conn = await asyncpg.connect(fleet.db_url, timeout=10)
    try:
        versions = await conn.fetch("SELECT version FROM taskflow_migrations ORDER BY version")
        assert [v["version"] for v in versions] == list(range(1, latest_version() + 1))
        # The waiting task is processed, and the one held by the old instance (its lease
        # ran out) is taken over: all four end terminal, their old history kept before.
        await wait_all_terminal(fleet.db_url, 4, 30)
        histories = await conn.fetch(
            "SELECT t.title, array_agg(e.status ORDER BY e.seq) AS statuses,"
            " array_agg(e.seq ORDER BY e.seq) AS seqs FROM tasks t"
            " JOIN task_events e ON e.task_id = t.id GROUP BY t.title"
        )
    finally:
        await conn.close(timeout=10)
    by_title = {h["title"]: h for h in histories}
    assert by_title["waiting"]["statuses"][:2] == ["new", "in_progress"]
    assert by_title["running"]["statuses"][:3] == ["new", "in_progress", "in_progress"]
    for history in histories:
        assert history["seqs"] == list(range(1, len(history["seqs"]) + 1))
    assert [len(s.events("db.migrated")) for s in launched].count(0) == 1
