"""What the lifecycle triggers write for statements that change no status, and for deletes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from taskflow.db.store import CreateClaimed, TaskStore
from taskflow.models import Outcome, Status
from tests.unit.helpers import new_task

OWNER = "instance-a"


async def _history(conn: asyncpg.Connection) -> tuple[int, dict[str, int]]:
    events = await conn.fetchval("SELECT count(*) FROM task_events")
    deltas = await conn.fetch(
        "SELECT status, sum(delta) AS n FROM task_count_deltas GROUP BY status"
    )
    return events, {r["status"]: r["n"] for r in deltas if r["n"]}


async def test_a_lease_renewal_writes_no_history_no_counts_and_no_notification(
    db_url: str, db: asyncpg.Connection
) -> None:
    task = new_task("renewed")
    async with TaskStore.connect(db_url) as store:
        await store.insert_tasks([task], CreateClaimed(OWNER, 30, 1))
    notified: list[str] = []
    await db.add_listener("taskflow_events", lambda *args: notified.append(args[-1]))
    before = await _history(db)
    delta_rows_before = await db.fetchval("SELECT count(*) FROM task_count_deltas")
    await db.execute(
        "UPDATE tasks SET lease_expires_at = now() + interval '60 seconds' WHERE id = $1",
        task.id,
    )
    after = await _history(db)
    delta_rows = await db.fetchval("SELECT count(*) FROM task_count_deltas")
    await db.execute(
        "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
        " lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
        task.id,
    )
    await asyncio.sleep(0.2)  # a notification arrives after its commit
    finished = await _history(db)
    assert before == after == (2, {"in_progress": 1})
    assert delta_rows == delta_rows_before  # the renewal appended no delta row, not even a 0
    assert finished == (3, {"completed": 1})  # in_progress -1, completed +1
    assert len(notified) == 1  # the completion's, none for the renewal


async def test_deleting_tasks_deletes_their_history_and_only_theirs(
    db_url: str, db: asyncpg.Connection
) -> None:
    gone, kept = new_task("gone"), new_task("kept")
    async with TaskStore.connect(db_url) as store:
        await store.insert_tasks([gone, kept], CreateClaimed(OWNER, 30, 2))
    await db.execute("DELETE FROM tasks WHERE id = $1", gone.id)
    left = await db.fetch("SELECT task_id, seq FROM task_events ORDER BY task_id, seq")
    counts = await _history(db)
    assert [(r["task_id"], r["seq"]) for r in left] == [(kept.id, 1), (kept.id, 2)]
    assert counts == (2, {"in_progress": 1})


async def test_a_change_by_an_older_transaction_stays_after_the_one_before_it_in_the_stream(
    db_url: str, db: asyncpg.Connection
) -> None:
    # The global stream is read in (xid, id) order. A transaction that began (and took its
    # xid) before another, but changes a task after that other one committed a change of
    # it, must still be read after it: its event takes the higher of the two positions.
    task = new_task("claimed-then-finished")
    async with TaskStore.connect(db_url) as store:
        await store.insert_tasks([task])
    older = await asyncpg.connect(db_url, timeout=10)
    try:
        async with older.transaction():
            older_xid = await older.fetchval("SELECT pg_current_xact_id()::text::bigint")
            await db.execute(  # a younger transaction claims the task and commits
                "UPDATE tasks SET status = 'in_progress', attempts = 1, started_at = now(),"
                " lease_owner = $2, lease_expires_at = now() + interval '30 seconds'"
                " WHERE id = $1",
                task.id,
                OWNER,
            )
            await older.execute(  # then the older one finishes it
                "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
                " lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
                task.id,
            )
    finally:
        await older.close()
    events = await db.fetch(
        "SELECT seq, status, xid::text::bigint AS xid FROM task_events WHERE task_id = $1"
        " ORDER BY xid, id",
        task.id,
    )
    assert [(e["seq"], e["status"]) for e in events] == [
        (1, "new"),
        (2, "in_progress"),
        (3, "completed"),
    ]
    assert events[2]["xid"] > older_xid  # placed at the claim's position, not its own


async def test_a_finished_task_cannot_be_rewritten_even_by_hand(
    db_url: str, db: asyncpg.Connection
) -> None:
    task = new_task("finished")
    async with TaskStore.connect(db_url) as store:
        created = await store.insert_tasks([task], CreateClaimed(OWNER, 30, 1))
        [claim] = created.claimed
        await store.finish([Outcome(claim, Status.COMPLETED, result={"n": 1})], OWNER)
    for change in ("result = '{\"n\": 2}'", "finished_at = now() - interval '1 day'"):
        with pytest.raises(asyncpg.CheckViolationError, match="cannot go from completed"):
            await db.execute(f"UPDATE tasks SET {change} WHERE id = $1", task.id)
    row = await db.fetchrow("SELECT status, result, seq FROM tasks WHERE id = $1", task.id)
    assert (row["status"], row["result"], row["seq"]) == ("completed", '{"n": 1}', 3)
