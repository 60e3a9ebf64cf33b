"""The hot statements keep the plans that make them cost the same at any table size.

A planner choice that reads every finished task per batch turned a 16,000 tasks/s drain
into 800/s once a partial index over terminal tasks existed: these tests pin the plans.
"""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg

from taskflow.db.connector import init_connection
from taskflow.db.queries import queries
from taskflow.db.store import FAR_FUTURE, MAX_UUID

FINISHED = 20000


async def _plan(conn: asyncpg.Connection, name: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN {queries()[name]}", *args)
    return "\n".join(r[0] for r in rows)


async def _store_finished(
    conn: asyncpg.Connection, count: int, *, analyze_when: Literal["new", "finished"]
) -> None:
    """`count` tasks taken through `in_progress` to `completed`, with ANALYZE run while
    they were all `new` (`analyze_when="new"`) or once they had all finished."""
    await conn.execute(
        "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'done', 'http'"
        " FROM generate_series(1, $1)",
        count,
    )
    if analyze_when == "new":
        await conn.execute("ANALYZE tasks")
    await conn.execute(
        "UPDATE tasks SET status = 'in_progress', attempts = 1, started_at = now(),"
        " lease_owner = 'owner', lease_expires_at = now() + interval '1 minute'"
    )
    await conn.execute(
        "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
        " lease_owner = NULL, lease_expires_at = NULL"
    )
    if analyze_when == "finished":
        await conn.execute("ANALYZE tasks")


async def test_finish_looks_up_earlier_attempts_by_primary_key_not_by_scanning_finished_tasks(
    db: asyncpg.Connection,
) -> None:
    await init_connection(db)  # jsonb arguments, encoded as the service does
    # As in a drain: statistics gathered while every task was new (the partial index
    # over finished tasks looks empty), then thousands finish before the next ANALYZE.
    await _store_finished(db, FINISHED, analyze_when="new")
    ids = [uuid.uuid4() for _ in range(100)]
    plan = await _plan(
        db,
        "finish_tasks",
        ids,
        [1] * 100,
        ["completed"] * 100,
        [{}] * 100,
        [None] * 100,
        "owner",
    )
    assert "tasks_prune_idx" not in plan, plan
    assert "Seq Scan on tasks" not in plan, plan
    assert "tasks_pkey" in plan, plan


async def test_the_claim_finds_the_oldest_new_tasks_through_an_index(
    db: asyncpg.Connection,
) -> None:
    # As before a drain: every task new, statistics fresh.
    await db.execute(
        "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'waiting', 'http'"
        " FROM generate_series(1, $1)",
        FINISHED,
    )
    await db.execute("ANALYZE tasks")
    plan = await _plan(db, "claim_tasks", "owner", 30.0, 100, [])
    assert "Seq Scan on tasks" not in plan, plan
    assert "tasks_status_newest_idx" in plan, plan


async def _two_thirds_into_a_drain(db: asyncpg.Connection) -> None:
    """Statistics taken while every task was new, then the oldest two thirds claimed and
    finished: walking tasks_newest_idx from the oldest end would read (and filter out)
    every one of those to find the oldest new task."""
    await db.execute(
        "INSERT INTO tasks (id, title, source, created_at) SELECT gen_random_uuid(),"
        " 'waiting', 'http', now() - make_interval(secs => $1 - g)"
        " FROM generate_series(1, $1) AS g",
        3 * FINISHED,
    )
    await db.execute("ANALYZE tasks")
    await db.execute(
        "UPDATE tasks SET status = 'in_progress', attempts = 1, started_at = now(),"
        " lease_owner = 'owner', lease_expires_at = now() + interval '1 minute'"
        " WHERE id IN (SELECT id FROM tasks ORDER BY created_at LIMIT $1)",
        2 * FINISHED,
    )
    await db.execute(
        "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
        " lease_owner = NULL, lease_expires_at = NULL WHERE status = 'in_progress'"
    )


async def test_the_claim_does_not_walk_past_the_tasks_it_claimed_before(
    db: asyncpg.Connection,
) -> None:
    await _two_thirds_into_a_drain(db)
    plan = await _plan(db, "claim_tasks", "owner", 30.0, 1000, [])
    assert "tasks_newest_idx" not in plan, plan
    assert "Index Scan Backward using tasks_status_newest_idx" in plan, plan


async def test_the_backlog_age_does_not_walk_past_the_tasks_finished_before(
    db: asyncpg.Connection,
) -> None:
    await _two_thirds_into_a_drain(db)
    plan = await _plan(db, "oldest_new")
    assert "tasks_newest_idx" not in plan, plan
    assert "Scan Backward using tasks_status_newest_idx" in plan, plan  # index only, even
    oldest = await db.fetchval(queries()["oldest_new"])
    assert oldest == await db.fetchval("SELECT min(created_at) FROM tasks WHERE status = 'new'")


async def test_a_page_by_status_reads_a_page_of_each_status_at_most(
    db: asyncpg.Connection,
) -> None:
    # Completed tasks are the oldest two thirds and the newest third waits: walking
    # tasks_newest_idx reads every waiting task first; with statistics taken while every
    # task was new, the planner took the status index but read them all and sorted.
    await _two_thirds_into_a_drain(db)
    await db.execute(
        "INSERT INTO tasks (id, title, source, created_at) SELECT gen_random_uuid(), 'old',"
        " 'http', now() - interval '1 day' FROM generate_series(1, 100)"
    )
    for change in (
        "status = 'in_progress', attempts = 1, started_at = now(), lease_owner = 'owner',"
        " lease_expires_at = now() + interval '1 minute'",
        "status = 'failed', error = 'x', finished_at = now(), lease_owner = NULL,"
        " lease_expires_at = NULL",
    ):
        await db.execute(f"UPDATE tasks SET {change} WHERE title = 'old'")
    for statistics in ("taken while every task was new", "current"):
        if statistics == "current":
            await db.execute("ANALYZE tasks")
        for statuses in (["completed"], ["completed", "failed"]):
            page = (FAR_FUTURE, MAX_UUID, 50, statuses)
            rows = await db.fetch(f"EXPLAIN (ANALYZE) {queries()['list_tasks_by_status']}", *page)
            plan = "\n".join(r[0] for r in rows)
            assert "tasks_newest_idx" not in plan, (statistics, plan)
            scans = [line for line in plan.splitlines() if "Index Scan" in line]
            assert all("tasks_status_newest_idx" in line for line in scans), (statistics, plan)
            assert all(f"rows=50 loops={len(statuses)}" in line for line in scans), plan
            listed = await db.fetch(queries()["list_tasks_by_status"], *page)
            expected = await db.fetch(
                "SELECT id FROM tasks WHERE status = ANY($1) ORDER BY created_at DESC, id DESC"
                " LIMIT 50",
                statuses,
            )
            assert [r["id"] for r in listed] == [r["id"] for r in expected]


# The statements that find their rows by id, with the parameter types of a PREPARE.
BY_ID = {
    "claim_new_by_ids": "uuid[], text, float8",
    "renew_leases": "uuid[], text, float8",
    "release_leases": "uuid[], text",
    "cancel_tasks": "uuid[], text, bool",
    "retry_tasks": "uuid[], text",
}


async def _generic_plan(conn: asyncpg.Connection, name: str) -> str:
    """The plan PostgreSQL caches for `name` when it stops planning each execution: made
    for no particular arguments, so any (NULLs) show it."""
    types = BY_ID[name]
    await conn.execute(f"PREPARE probe({types}) AS {queries()[name]}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        nulls = ", ".join("NULL" for _ in types.split(","))
        rows = await conn.fetch(f"EXPLAIN EXECUTE probe({nulls})")
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE probe")
    return "\n".join(r[0] for r in rows)


async def test_statements_by_id_probe_the_primary_key_whatever_the_statistics_say(
    db: asyncpg.Connection,
) -> None:
    # A deployment analyzed while quiet: every task finished, none new nor running.
    await _store_finished(db, FINISHED, analyze_when="finished")
    # Then a burst, before the next ANALYZE: thousands running and thousands waiting.
    # The statistics say neither status exists, so an index on the status looks like
    # the cheapest way to any of them, and scanning it reads every one of them.
    await db.execute(
        "INSERT INTO tasks (id, title, source, status, attempts, lease_owner,"
        " lease_expires_at) SELECT gen_random_uuid(), 'running', 'http', 'in_progress', 1,"
        " 'owner', now() + interval '1 minute' FROM generate_series(1, $1)",
        FINISHED // 2,
    )
    await db.execute(
        "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'waiting', 'http'"
        " FROM generate_series(1, $1)",
        FINISHED // 2,
    )
    ids = [uuid.uuid4() for _ in range(100)]
    custom = {
        "claim_new_by_ids": await _plan(db, "claim_new_by_ids", ids, "owner", 30.0),
        "renew_leases": await _plan(db, "renew_leases", ids, "owner", 30.0),
        "release_leases": await _plan(db, "release_leases", ids, "owner"),
        "cancel_tasks": await _plan(db, "cancel_tasks", ids, "why", False),
        "retry_tasks": await _plan(db, "retry_tasks", ids, "why"),
    }
    generic = {name: await _generic_plan(db, name) for name in BY_ID}
    for name in BY_ID:
        for kind, plan in (("planned for its arguments", custom[name]), ("generic", generic[name])):
            where = f"{name}, {kind}:\n{plan}"
            assert "tasks_status_newest_idx" not in plan, where
            assert "tasks_prune_idx" not in plan, where
            assert "Seq Scan on tasks" not in plan, where
            assert "tasks_pkey" in plan, where
