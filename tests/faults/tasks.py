"""Creating tasks over HTTP and reading what PostgreSQL holds about them.

The assertions of the fault tests read PostgreSQL directly: a killed service cannot be
asked, and the database is the source of truth the contract speaks about.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from taskflow_bench.harness import events
from taskflow_bench.harness.service import Service
from taskflow_bench.harness.tasks import TERMINAL


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as PostgreSQL has it, with its status history as (status, attempt) pairs."""

    id: uuid.UUID
    status: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_left_s: float | None
    history: tuple[tuple[str, int], ...]
    history_at: tuple[datetime, ...]
    result: dict[str, Any] | None

    @property
    def terminal(self) -> bool:
        """True once completed or failed."""
        return self.status in TERMINAL

    def expected_history(self) -> tuple[tuple[str, int], ...]:
        """The only history a finished task may have: one `in_progress` per attempt."""
        started = tuple(("in_progress", n) for n in range(1, self.attempts + 1))
        return (("new", 0), *started, (self.status, self.attempts))


_SNAPSHOT = """
SELECT t.id, t.status, t.attempts, t.lease_owner, t.lease_expires_at, t.result,
       extract(epoch FROM t.lease_expires_at - now())::float8 AS lease_left_s,
       coalesce(array_agg(e.status ORDER BY e.id) FILTER (WHERE e.id IS NOT NULL), '{}') AS st,
       coalesce(array_agg(e.attempt ORDER BY e.id) FILTER (WHERE e.id IS NOT NULL), '{}') AS att,
       coalesce(array_agg(e.at ORDER BY e.id) FILTER (WHERE e.id IS NOT NULL), '{}') AS ats
FROM tasks t LEFT JOIN task_events e ON e.task_id = t.id
GROUP BY t.id
"""


async def snapshot(db_url: str) -> dict[uuid.UUID, TaskRow]:
    """Every task in the database, with its history."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
        rows = await conn.fetch(_SNAPSHOT, timeout=30)
    finally:
        await conn.close(timeout=10)
    return {
        r["id"]: TaskRow(
            id=r["id"],
            status=r["status"],
            attempts=r["attempts"],
            lease_owner=r["lease_owner"],
            lease_expires_at=r["lease_expires_at"],
            lease_left_s=r["lease_left_s"],
            history=tuple(zip(r["st"], r["att"], strict=True)),
            history_at=tuple(r["ats"]),
            result=r["result"],
        )
        for r in rows
    }


async def status_counts(db_url: str) -> dict[str, int]:
    """How many tasks are in each status."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    finally:
        await conn.close(timeout=10)
    counts = dict.fromkeys(("new", "in_progress", "completed", "failed", "cancelled"), 0)
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def wait_counts(db_url: str, timeout: float, **at_least: int) -> dict[str, int]:
    """Wait (at most `timeout`) until each named status has at least that many tasks."""
    async with asyncio.timeout(timeout):
        while True:
            counts = await status_counts(db_url)
            if all(counts[s] >= n for s, n in at_least.items()):
                return counts
            await asyncio.sleep(0.05)


async def wait_all_terminal(db_url: str, expected: int, timeout: float) -> dict[str, int]:
    """Wait (at most `timeout`) until `expected` tasks exist and none is new or in progress."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                counts = await status_counts(db_url)
                done = counts["completed"] + counts["failed"] + counts["cancelled"]
                if done >= expected and counts["new"] == counts["in_progress"] == 0:
                    return counts
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not all terminal after {timeout} s: {counts}") from None


async def create_one(
    session: aiohttp.ClientSession, url: str, title: str, timeout: float = 30.0
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST one task; the status, JSON body and headers of the answer."""
    async with session.post(
        f"{url}/tasks",
        json={"title": title, "payload": {"n": title}},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body, dict(response.headers)


async def create_tasks(
    session: aiohttp.ClientSession, url: str, count: int, concurrency: int = 32
) -> list[uuid.UUID]:
    """Create `count` tasks over HTTP, `concurrency` at a time; every answer must be 201."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> uuid.UUID:
        async with gate:
            status, body, _ = await create_one(session, url, f"task-{n}")
            assert status == 201, body
            return uuid.UUID(body["id"])

    return list(await asyncio.gather(*(one(n) for n in range(count))))


def terminal_write(service: Service, task_id: uuid.UUID, attempt: int) -> dict[str, Any]:
    """The one terminal status change `service` logged for this attempt of the task."""
    [written] = [
        e
        for e in service.events(events.STATUS_CHANGED, task_id=str(task_id), attempt=attempt)
        if e["status"] in TERMINAL
    ]
    return written
