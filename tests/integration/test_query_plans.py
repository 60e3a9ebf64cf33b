"""The hot statements keep the plans that make them cost the same at any table size.

A planner choice that reads every finished task per batch turned a 16,000 tasks/s drain
into 800/s once a partial index over terminal tasks existed: these tests pin the plans.
"""

from __future__ import annotations

import uuid

import asyncpg

from taskflow.db.connector import init_connection
from taskflow.db.queries import queries

FINISHED = 5000


async def _plan(conn: asyncpg.Connection, name: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN {queries()[name]}", *args)
    return "\n".join(r[0] for r in rows)


async def test_finish_looks_up_earlier_attempts_by_primary_key_not_by_scanning_finished_tasks(
    db_url: str,
) -> None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await init_connection(conn)
        # As in a drain: statistics gathered while every task was new (the partial index
        # over finished tasks looks empty), then thousands finish before the next ANALYZE.
        await conn.execute(
            "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'done', 'http'"
            " FROM generate_series(1, $1)",
            FINISHED,
        )
        await conn.execute("ANALYZE tasks")
        await conn.execute(
            "UPDATE tasks SET status = 'in_progress', attempts = 1, started_at = now(),"
            " lease_owner = 'owner', lease_expires_at = now() + interval '1 minute'"
        )
        await conn.execute(
            "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
            " lease_owner = NULL, lease_expires_at = NULL"
        )
        ids = [uuid.uuid4() for _ in range(100)]
        plan = await _plan(
            conn,
            "finish_tasks",
            ids,
            [1] * 100,
            ["completed"] * 100,
            [{}] * 100,
            [None] * 100,
            "owner",
        )
    finally:
        await conn.close()
    assert "tasks_prune_idx" not in plan, plan
    assert "Seq Scan on tasks" not in plan, plan
    assert "tasks_pkey" in plan, plan


async def test_finish_finds_running_attempts_by_primary_key_in_its_generic_plan(
    db_url: str,
) -> None:
    """asyncpg prepares each statement, and PostgreSQL switches to a generic plan after five
    runs. With statistics gathered while no task ran (a few rows `in_progress` estimated),
    that plan once read every running task for each outcome of the batch (a nested loop
    over a status index): with 2,000 processors, a batch took half a second and a drain
    next to a million stored tasks fell to a tenth of its rate."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await init_connection(conn)
        await conn.execute(
            "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'run', 'http'"
            " FROM generate_series(1, $1)",
            FINISHED,
        )
        await conn.execute("ANALYZE tasks")
        await conn.execute(
            "UPDATE tasks SET status = 'in_progress', attempts = 1, started_at = now(),"
            " lease_owner = 'owner', lease_expires_at = now() + interval '1 minute'"
            " WHERE id IN (SELECT id FROM tasks LIMIT 1000)"
        )
        await conn.execute(
            "PREPARE finish(uuid[], int[], text[], jsonb[], text[], text) AS "
            + queries()["finish_tasks"]
        )
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM tasks WHERE attempts = 1")]
        n = len(ids)
        # EXECUTE takes no bind parameters: the batch is written out (one outcome per task).
        rows = await conn.fetch(
            f"EXPLAIN EXECUTE finish('{{{','.join(map(str, ids))}}}', array_fill(1, ARRAY[{n}]),"
            f" array_fill('completed'::text, ARRAY[{n}]), array_fill('{{}}'::jsonb, ARRAY[{n}]),"
            f" array_fill(NULL::text, ARRAY[{n}]), 'owner')"
        )
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    update = plan[plan.index("Update on tasks") : plan.index("->  Append")]
    assert "tasks_pkey" in update, plan
    assert "Join Filter" not in update, plan
