"""DashboardStore: the queries behind `GET /stats`, the instances registry and `q` search.

Named queries live in `dashboard.sql`, tables in `migrations/0004_instances.sql`. Every
query here reads a few rows per live instance or walks an index range: none grows with
the number of tasks stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

from taskflow.db.connector import Database
from taskflow.db.queries import parse_queries
from taskflow.db.store import FAR_FUTURE, MAX_UUID
from taskflow.models import Source, Status, Task

# The status changes the dashboard shows as rates, in this order.
RATE_KINDS = ("created", "completed", "failed", "cancelled")


@cache
def dashboard_queries() -> dict[str, str]:
    """The named queries of `dashboard.sql`, read once from the package."""
    text = resources.files("taskflow.db").joinpath("dashboard.sql").read_text("utf-8")
    return parse_queries(text)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What one instance reports every few seconds."""

    instance_id: str
    started_at: datetime
    processors: int
    busy: int
    queue_depth: int
    queue_capacity: int
    # Status changes this instance committed since its previous heartbeat, over `seconds`.
    seconds: float
    changes: dict[str, int]


@dataclass(frozen=True, slots=True)
class Instance:
    """A live instance as the registry last heard from it."""

    id: str
    started_at: datetime
    last_seen_at: datetime
    processors: int
    busy: int
    queue_depth: int
    queue_capacity: int

    def to_json(self) -> dict[str, Any]:
        """The contract's instance object (plus the intake queue's depth and bound)."""
        return {
            "id": self.id,
            "started_at": self.started_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "processors": self.processors,
            "busy": self.busy,
            "queue_depth": self.queue_depth,
            "queue_capacity": self.queue_capacity,
        }


@dataclass(frozen=True, slots=True)
class RateBucket:
    """Status changes of all instances in one bucket of the chart."""

    start: datetime
    changes: dict[str, int]


def title_range(prefix: str) -> tuple[str, str | None]:
    """The bounds `[low, high)` of the strings starting with `prefix` (lower-cased).

    `high` is `low` with its last code point incremented (UTF-8 byte order is code point
    order, which `text_pattern_ops` compares); None when there is no such code point.
    """
    low = prefix.lower()
    last = ord(low[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: skip them
        last = 0xE000
    high = low[:-1] + chr(last) if last <= 0x10FFFF else None
    return low, high


def _task(row: asyncpg.Record) -> Task:
    values = {f.name: row[f.name] for f in dataclasses.fields(Task)}
    values["status"] = Status(values["status"])
    values["source"] = Source(values["source"])
    return Task(**values)


class DashboardStore:
    """The dashboard's queries on a `Database` (its pool, its call timeout, its errors:
    unreachable PostgreSQL is `StoreUnavailable`, a refusal `StoreError`)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._q = dashboard_queries()

    async def _fetch(self, name: str, *args: Any, plan_each_time: bool = False) -> list[Any]:
        """Run a named query within the call timeout.

        With `plan_each_time` it is prepared afresh (not from the statement cache), so
        PostgreSQL plans it for these very parameters: a cached statement soon gets a
        generic plan, which cannot tell a rare title prefix from a common one.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._db.timeout
        async with self._db.connection() as conn:
            left = max(deadline - loop.time(), 0.001)
            if not plan_each_time:
                return list(await conn.fetch(self._q[name], *args, timeout=left))
            statement = await conn.prepare(self._q[name], timeout=left)
            left = max(deadline - loop.time(), 0.001)
            return list(await statement.fetch(*args, timeout=left))

    async def heartbeat(self, beat: Heartbeat, forget_after_s: float, keep_s: float) -> int:
        """Record `beat`; delete instances unseen for `forget_after_s` and samples older
        than `keep_s`. Returns how many instances were deleted."""
        rows = await self._fetch(
            "heartbeat",
            beat.instance_id,
            beat.started_at,
            beat.processors,
            beat.busy,
            beat.queue_depth,
            beat.queue_capacity,
            beat.seconds,
            *(beat.changes.get(kind, 0) for kind in RATE_KINDS),
            forget_after_s,
            keep_s,
        )
        gone: int = rows[0]["gone"]
        return gone

    async def deregister(self, instance_id: str) -> None:
        """Remove an instance that is stopping."""
        await self._fetch("deregister", instance_id)

    async def live_instances(self, seen_within_s: float) -> list[Instance]:
        """Instances whose last heartbeat is at most `seen_within_s` old, oldest first."""
        rows = await self._fetch("live_instances", seen_within_s)
        return [Instance(**dict(row)) for row in rows]

    async def recent_changes(self, window_s: float) -> dict[str, int]:
        """Status changes of all instances in the last `window_s` seconds, by kind."""
        rows = await self._fetch("recent_changes", window_s)
        return {kind: int(rows[0][kind]) for kind in RATE_KINDS}

    async def change_series(self, bucket_s: int, window_s: int) -> list[RateBucket]:
        """Status changes of all instances per `bucket_s` seconds over the last `window_s`
        seconds, oldest first, empty buckets included (the last one is still filling)."""
        rows = await self._fetch("change_series", bucket_s, window_s)
        return [RateBucket(r["bucket"], {k: int(r[k]) for k in RATE_KINDS}) for r in rows]

    async def search_by_title(
        self,
        prefix: str,
        statuses: Sequence[str],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Task]:
        """Tasks whose title starts with `prefix`, any case, newest first after `after`."""
        low, high = title_range(prefix)
        created_at, task_id = after or (FAR_FUTURE, MAX_UUID)
        rows = await self._fetch(
            "search_by_title",
            low,
            high,
            created_at,
            task_id,
            limit,
            list(statuses),
            plan_each_time=True,
        )
        return [_task(r) for r in rows]
