"""TaskStore: the tasks repository. Every task operation of taskflow, one typed method each.

It speaks in tasks and runs named queries through `Database` (the connector), which owns
the pool and translates driver errors. Status changes are made by the queries and
recorded by the lifecycle triggers of the schema (history event, `seq`, counts, NOTIFY).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from taskflow.db.connector import CALL_TIMEOUT_S, Database
from taskflow.models import (
    Claim,
    ControlOutcome,
    ControlResult,
    NewTask,
    Outcome,
    Source,
    Status,
    StatusEvent,
    StreamEvent,
    Task,
)

# A retention batch deletes a few thousand rows and their history: more than one call.
PRUNE_TIMEOUT_S = 30.0

# ANALYZE of a lifecycle table: a few hundred ms for a million rows, never more than this.
ANALYZE_TIMEOUT_S = 60.0
ANALYZE_LOCK_TIMEOUT = "1s"
_ANALYZE = {"tasks": "ANALYZE tasks", "task_events": "ANALYZE task_events"}

FAR_FUTURE = datetime.fromisoformat("9999-12-31T23:59:59+00:00")
MAX_UUID = uuid.UUID(int=(1 << 128) - 1)
# How often a cancel or retry is run again for tasks another transaction changed under it.
CONTROL_ROUNDS = 5

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What one intake batch did: tasks created, and tasks that already had a batch's key."""

    created: list[Task]
    existing: dict[str, tuple[Task, bytes | None]]
    claimed: list[Claim] = field(default_factory=list)
    """The created tasks that were created already claimed (also in `created`)."""


@dataclass(frozen=True, slots=True)
class CreateClaimed:
    """Create the first `count` tasks of a batch already claimed by `owner` (attempt 1)."""

    owner: str
    lease_s: float
    count: int


def _task(row: asyncpg.Record) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        payload=row["payload"],
        status=Status(row["status"]),
        source=Source(row["source"]),
        attempts=row["attempts"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cancel_requested_at=row["cancel_requested_at"],
    )


def _stream_event(row: asyncpg.Record) -> StreamEvent:
    event = StatusEvent(row["seq"], Status(row["status"]), row["attempt"], row["at"], row["reason"])
    return StreamEvent(row["xid"], row["id"], row["task_id"], event)


@dataclass(frozen=True, slots=True)
class StreamPage:
    """Events of the global stream below the horizon, and the horizon itself.

    `horizon` is `pg_snapshot_xmin`: every transaction with a lower xid had ended when the
    page was read. `next_xid` is the snapshot's xmax: no xid at or above it exists yet."""

    events: list[StreamEvent]
    horizon: int
    next_xid: int


def _claim(row: asyncpg.Record) -> Claim:
    return Claim(task_id=row["id"], attempt=row["attempts"], source=Source(row["source"]))


class TaskStore:
    """The task operations, on a `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dsn: str, *, max_size: int = 10, timeout: float = CALL_TIMEOUT_S
    ) -> AsyncIterator[TaskStore]:
        """A store on a new pool to `dsn` (closed on exit): for tools and tests."""
        async with Database.connect(dsn, max_size=max_size, timeout=timeout) as db:
            yield cls(db)

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        return await self.db.fetch(name, *args)

    async def insert_tasks(
        self, batch: Sequence[NewTask], claim: CreateClaimed | None = None
    ) -> InsertResult:
        """Insert a batch in one statement; tasks whose key exists are returned as existing.

        With `claim`, the first `claim.count` tasks are created `in_progress`, held by
        `claim.owner` (their history is still `new`, then `in_progress`).
        """
        claimed_count = claim.count if claim is not None else 0
        rows = await self._fetch(
            "insert_tasks",
            [t.id for t in batch],
            [t.title for t in batch],
            [t.description for t in batch],
            [t.payload for t in batch],
            [t.source.value for t in batch],
            [t.idempotency_key for t in batch],
            [t.fingerprint() if t.idempotency_key else None for t in batch],
            [n < claimed_count for n in range(len(batch))],
            claim.owner if claim is not None else None,
            claim.lease_s if claim is not None else None,
        )
        created = [_task(r) for r in rows]
        claimed = [_claim(r) for r in rows if r["status"] == Status.IN_PROGRESS]
        created_ids = {t.id for t in created}
        missing_keys = [
            t.idempotency_key for t in batch if t.idempotency_key and t.id not in created_ids
        ]
        existing: dict[str, tuple[Task, bytes | None]] = {}
        if missing_keys:
            for row in await self._fetch("tasks_by_keys", missing_keys):
                existing[row["idempotency_key"]] = (_task(row), row["fingerprint"])
        return InsertResult(created, existing, claimed)

    async def get_task(self, task_id: uuid.UUID) -> Task | None:
        """The task with `task_id`, or None."""
        rows = await self._fetch("get_task", task_id)
        return _task(rows[0]) if rows else None

    async def list_tasks(
        self,
        statuses: Sequence[Status],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Task]:
        """A page of tasks, newest first, strictly older than the cursor `after`."""
        created_at, task_id = after or (FAR_FUTURE, MAX_UUID)
        if statuses:
            wanted = sorted({s.value for s in statuses})
            rows = await self._fetch("list_tasks_by_status", created_at, task_id, limit, wanted)
        else:
            rows = await self._fetch("list_tasks", created_at, task_id, limit)
        return [_task(r) for r in rows]

    async def task_events(self, task_id: uuid.UUID) -> list[StatusEvent]:
        """The status history of a task, oldest first."""
        rows = await self._fetch("task_events", task_id)
        return [
            StatusEvent(r["seq"], Status(r["status"]), r["attempt"], r["at"], r["reason"])
            for r in rows
        ]

    async def claim(
        self, owner: str, lease_s: float, limit: int, running: Collection[uuid.UUID] = ()
    ) -> list[tuple[Claim, bool]]:
        """Claim up to `limit` new or lease-expired tasks; each with whether it was recovered.

        Tasks in `running` (attempts this instance still runs) are never claimed again.
        """
        rows = await self._fetch("claim_tasks", owner, lease_s, limit, list(running))
        for row in rows:
            if row["cancelled"]:
                log.info(
                    "lease expired with a cancel requested: task cancelled",
                    task_id=str(row["id"]),
                    attempt=row["attempts"],
                )
        return [(_claim(r), r["recovered"]) for r in rows if not r["cancelled"]]

    async def claim_new(self, ids: Sequence[uuid.UUID], owner: str, lease_s: float) -> list[Claim]:
        """Claim the given tasks if they are still `new` (just created by this instance)."""
        rows = await self._fetch("claim_new_by_ids", list(ids), owner, lease_s)
        return [_claim(r) for r in rows]

    async def finish(self, outcomes: Sequence[Outcome], owner: str) -> set[tuple[uuid.UUID, int]]:
        """Write outcomes whose attempt `owner` still holds; return the (id, attempt) written.

        Idempotent: an outcome whose attempt is already terminal (an earlier try that
        committed, its answer lost) counts as written; nothing is written twice.
        """
        rows = await self._fetch(
            "finish_tasks",
            [o.claim.task_id for o in outcomes],
            [o.claim.attempt for o in outcomes],
            [o.status.value for o in outcomes],
            [o.result for o in outcomes],
            [o.error for o in outcomes],
            owner,
        )
        return {(r["id"], r["attempts"]) for r in rows}

    async def renew(
        self, ids: Iterable[uuid.UUID], owner: str, lease_s: float
    ) -> dict[uuid.UUID, datetime | None]:
        """Extend the leases `owner` holds on `ids`; return those still held, each with its
        `cancel_requested_at` (set when a cancel of the attempt is pending). A lease whose
        row another transaction holds locked is not waited for: it is returned, not
        extended this time."""
        rows = await self._fetch("renew_leases", list(ids), owner, lease_s)
        return {r["id"]: r["cancel_requested_at"] for r in rows}

    async def release(self, ids: Iterable[uuid.UUID], owner: str) -> set[uuid.UUID]:
        """End the leases `owner` holds on `ids` now, so any instance may claim them.

        Returns the ids whose lease was ended (not those already finished or taken over).
        """
        rows = await self._fetch("release_leases", list(ids), owner)
        return {r["id"] for r in rows}

    async def status_counts(self) -> dict[Status, int]:
        """How many tasks are in each status."""
        counts = dict.fromkeys(Status, 0)
        for row in await self._fetch("status_counts"):
            counts[Status(row["status"])] = row["n"]
        return counts

    async def fold_counts(self) -> None:
        """Fold the per-statement count deltas into the per-status totals (one instance)."""
        await self._fetch("fold_task_counts")

    async def prune_finished(self, retention_s: int, limit: int) -> int | None:
        """Delete up to `limit` terminal tasks finished more than `retention_s` ago.

        One short transaction, which first takes the prune lock: None (nothing deleted)
        when another instance holds it, else how many tasks were deleted.
        """
        q = self.db.queries
        async with self.db.connection() as conn, conn.transaction():
            if not await conn.fetchval(q["prune_lock"], timeout=PRUNE_TIMEOUT_S):
                return None
            deleted: int = await conn.fetchval(
                q["prune_finished"], retention_s, limit, timeout=PRUNE_TIMEOUT_S
            )
            return deleted

    async def stale_tables(self, min_changes: int, factor: float) -> list[str]:
        """The lifecycle tables changed by at least `min_changes` rows and `factor` times
        the rows of their planner statistics since their last ANALYZE."""
        return [row["name"] for row in await self._fetch("stale_statistics", min_changes, factor)]

    async def analyze_stale(self, min_changes: int, factor: float) -> list[str] | None:
        """ANALYZE the tables that `stale_tables` names, and return them.

        One transaction, which first takes the analyze lock: None (nothing analyzed) when
        another instance holds it. ANALYZE waits at most `ANALYZE_LOCK_TIMEOUT` for its
        table lock (held by autovacuum while it works on the table): then StoreError.
        """
        q = self.db.queries
        async with self.db.connection() as conn, conn.transaction():
            if not await conn.fetchval(q["analyze_lock"]):
                return None
            stale = [
                row["name"] for row in await conn.fetch(q["stale_statistics"], min_changes, factor)
            ]
            if stale:
                await conn.execute(f"SET LOCAL lock_timeout = '{ANALYZE_LOCK_TIMEOUT}'")
            for name in stale:
                await conn.execute(_ANALYZE[name], timeout=ANALYZE_TIMEOUT_S)
            return stale

    async def oldest_new(self) -> datetime | None:
        """When the oldest task still `new` was created, or None."""
        rows = await self._fetch("oldest_new")
        value: datetime | None = rows[0][0] if rows else None
        return value

    async def cancel(
        self, ids: Sequence[uuid.UUID], reason: str | None
    ) -> dict[uuid.UUID, ControlResult]:
        """Cancel the tasks `ids`: `new` ones now, running ones by request (their holder is
        notified). Unknown ids are left out of the answer."""
        return await self._control(
            lambda some, wait: self._fetch("cancel_tasks", some, reason, wait),
            ids,
            _cancel_result,
        )

    async def retry(
        self, ids: Sequence[uuid.UUID], reason: str | None
    ) -> dict[uuid.UUID, ControlResult]:
        """Retry the `failed` and `cancelled` tasks among `ids` (back to `new`). Unknown ids
        are left out of the answer."""
        return await self._control(
            lambda some, _: self._fetch("retry_tasks", some, reason), ids, _retry_result
        )

    async def _control(
        self,
        run: Callable[[list[uuid.UUID], bool], Awaitable[list[asyncpg.Record]]],
        ids: Sequence[uuid.UUID],
        judge: Callable[[str, Task], ControlOutcome | None],
    ) -> dict[uuid.UUID, ControlResult]:
        """Run a cancel or retry statement, again for the tasks it saw mid-change.

        A task changed by another transaction while the statement waited for its row lock
        is re-checked by the UPDATE but reported with its old status: `judge` returns None
        for those, and they go into the next round (bounded; after the last they count as
        a conflict with the status last seen). A task another transaction holds locked is
        `busy` (a cancel does not wait for a lock while it holds others: that could
        deadlock): the statement runs again for one of them alone, waiting
        (`run(ids, wait)`), then for the rest without waiting, until none is busy.
        """
        results: dict[uuid.UUID, ControlResult] = {}
        pending = list(dict.fromkeys(ids))
        for round_ in range(CONTROL_ROUNDS):
            if not pending:
                break
            rows = await run(pending, False)
            busy = [row["id"] for row in rows if row["outcome"] == "busy"]
            while busy:
                # Wait for one, holding nothing else; the transaction that held it has
                # most likely ended, and with it the locks on the others: try them again
                # together (each pass settles at least the one waited for).
                rows.extend(await run(busy[:1], True))
                again = await run(busy[1:], False) if len(busy) > 1 else []
                rows.extend(again)
                busy = [row["id"] for row in again if row["outcome"] == "busy"]
            pending = []
            for row in rows:
                change = row["outcome"]
                if change == "busy":
                    continue  # its own run, waiting, is among the rows
                task = _task(row)
                outcome = judge(change, task)
                if outcome is None and round_ < CONTROL_ROUNDS - 1:
                    pending.append(task.id)
                else:
                    results[task.id] = ControlResult(
                        outcome or ControlOutcome.CONFLICT, task, change != "unchanged"
                    )
        return results

    async def stream_events(
        self,
        after: tuple[int, int],
        limit: int,
        task_id: uuid.UUID | None = None,
        statuses: Sequence[Status] = (),
    ) -> StreamPage:
        """Up to `limit` events after position `after`, below the horizon, in stream order."""
        rows = await self._fetch(
            "stream_events", after[0], after[1], limit, task_id, [s.value for s in statuses]
        )
        events = [_stream_event(r) for r in rows if r["id"] is not None]
        return StreamPage(events, rows[0]["horizon"], rows[0]["next_xid"])

    async def task_stream_start(self, task_id: uuid.UUID) -> tuple[Status, int] | None:
        """A task's status and the `seq` of its latest event, or None for an unknown task."""
        rows = await self._fetch("task_stream_start", task_id)
        return (Status(rows[0]["status"]), rows[0]["seq"]) if rows else None

    async def task_events_after(self, task_id: uuid.UUID, seq: int) -> list[StreamEvent]:
        """A task's events after `seq`, oldest first."""
        return [_stream_event(r) for r in await self._fetch("task_events_after", task_id, seq)]

    async def task_events_since(
        self, task_ids: Sequence[uuid.UUID], seqs: Sequence[int]
    ) -> list[StreamEvent]:
        """The events of each task of `task_ids` after its seq in `seqs`, by task and seq."""
        rows = await self._fetch("task_events_since", list(task_ids), list(seqs))
        return [_stream_event(r) for r in rows]


def _cancel_result(change: str, task: Task) -> ControlOutcome | None:
    if change == "cancelled":
        return ControlOutcome.CANCELLED
    if change == "cancel_requested":
        return ControlOutcome.CANCEL_REQUESTED
    if task.status is Status.CANCELLED:
        return ControlOutcome.CANCELLED  # already: unchanged
    if task.status in (Status.COMPLETED, Status.FAILED):
        return ControlOutcome.CONFLICT
    return None  # `new` or `in_progress` in an old snapshot: changed meanwhile


def _retry_result(change: str, task: Task) -> ControlOutcome | None:
    if change == "retried":
        return ControlOutcome.RETRIED
    if task.status in (Status.FAILED, Status.CANCELLED):
        return None  # retryable in an old snapshot: changed meanwhile
    return ControlOutcome.CONFLICT
