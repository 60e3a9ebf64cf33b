"""A task created already claimed keeps the history of one created, then claimed."""

from __future__ import annotations

import asyncpg
import pytest

from taskflow.db.store import CreateClaimed, TaskStore
from tests.unit.helpers import new_task

OWNER = "instance-a"


async def test_history_is_new_then_in_progress_each_at_its_own_time(db_url: str) -> None:
    mine, other = new_task("mine"), new_task("other")
    async with TaskStore.connect(db_url) as store:
        await store.insert_tasks([mine, other], CreateClaimed(OWNER, 30, 1))
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        events = await conn.fetch(
            "SELECT task_id, id, seq, status, attempt, at FROM task_events ORDER BY id"
        )
        task = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", mine.id)
        counts = await conn.fetch(
            "SELECT status, sum(delta) AS n FROM task_count_deltas GROUP BY status ORDER BY 1"
        )
    finally:
        await conn.close()
    created = [(e["seq"], e["status"], e["attempt"]) for e in events if e["task_id"] == mine.id]
    assert created == [(1, "new", 0), (2, "in_progress", 1)]
    assert [(e["seq"], e["status"]) for e in events if e["task_id"] == other.id] == [(1, "new")]
    new_event, claim_event = (e for e in events if e["task_id"] == mine.id)
    assert new_event["id"] < claim_event["id"]
    assert new_event["at"] == task["created_at"] <= claim_event["at"] == task["started_at"]
    assert (task["seq"], task["lease_owner"], task["attempts"]) == (2, OWNER, 1)
    assert task["lease_expires_at"] > task["started_at"]
    assert {r["status"]: r["n"] for r in counts} == {"in_progress": 1, "new": 1}


@pytest.mark.parametrize(
    ("status", "attempts"), [("completed", 1), ("failed", 1), ("in_progress", 2)]
)
async def test_a_task_is_born_new_or_in_its_first_attempt_only(
    db_url: str, status: str, attempts: int
) -> None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="cannot be created"):
            await conn.execute(
                "INSERT INTO tasks (id, title, source, status, attempts, lease_owner,"
                " lease_expires_at, started_at, finished_at, result, error)"
                " VALUES (gen_random_uuid(), 't', 'http', $1, $2, NULL, NULL, now(), now(),"
                " '{}', 'x')",
                status,
                attempts,
            )
    finally:
        await conn.close()
