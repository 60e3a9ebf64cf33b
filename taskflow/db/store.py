"""TaskStore: every PostgreSQL query of taskflow, one typed method each.

asyncpg errors are translated here and nowhere else: unreachable or too slow becomes
`StoreUnavailable` (HTTP 503), anything else PostgreSQL rejects becomes `StoreError`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from taskflow.db.queries import queries, schema_digest, schema_sql
from taskflow.errors import StoreError, StoreUnavailable
from taskflow.models import Claim, NewTask, Outcome, Source, Status, StatusEvent, Task

log = structlog.get_logger(__name__)

# Errors that mean "PostgreSQL is not there right now", as opposed to "it said no".
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Raised by a connection that the server closed in the middle of an operation
    # ("cannot switch to state …"): the connection is gone, not the query refused.
    asyncpg.exceptions.InternalClientError,
)

# How long one store call may take, connection wait and query together.
CALL_TIMEOUT_S = 5.0
# A retention batch deletes a few thousand rows and their history: more than one call.
PRUNE_TIMEOUT_S = 30.0

FAR_FUTURE = datetime.fromisoformat("9999-12-31T23:59:59+00:00")
MAX_UUID = uuid.UUID(int=(1 << 128) - 1)


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What one intake batch did: tasks created, and tasks that already had a batch's key."""

    created: list[Task]
    existing: dict[str, tuple[Task, bytes | None]]


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
    )


def _claim(row: asyncpg.Record) -> Claim:
    return Claim(task_id=row["id"], attempt=row["attempts"], source=Source(row["source"]))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool without asyncpg's reset query.

    The default reset (`RESET ALL`, `UNLISTEN *`, `CLOSE ALL`, unlock advisory locks)
    costs a round trip per use, and taskflow never changes that session state on pooled
    connections: codecs are client-side, LISTEN has its own connection, locks are
    transaction-scoped. Only an unfinished transaction is rolled back.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class TaskStore:
    """The PostgreSQL side of taskflow.

    Every call is bounded by `timeout` seconds, waiting for a pooled connection and
    running the query together: during a network partition, where nothing answers and
    only timeouts end a call, a request gets its 503 in that time.
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str, timeout: float = CALL_TIMEOUT_S) -> None:
        self._pool = pool
        self._dsn = dsn
        self._q = queries()
        self.timeout = timeout

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dsn: str, *, max_size: int = 10, timeout: float = CALL_TIMEOUT_S
    ) -> AsyncIterator[TaskStore]:
        """Open a pool on `dsn`, yield a store on it, close the pool on exit."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                init=_init_connection,
                reset=_reset_connection,
                timeout=timeout,
                command_timeout=timeout,
                max_inactive_connection_lifetime=60,
            )
        except _UNREACHABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL refused the connection: {exc}") from exc
        try:
            yield cls(pool, dsn, timeout)
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout)
            except TimeoutError:
                pool.terminate()

    @staticmethod
    async def wait_until_reachable(dsn: str, timeout: float) -> None:
        """Wait up to `timeout` seconds for PostgreSQL to accept a connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.2
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=min(timeout, 10.0))
            except _UNREACHABLE as exc:
                if loop.time() + delay > deadline:
                    raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
                log.warning("PostgreSQL not reachable yet, retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"PostgreSQL refused the connection: {exc}") from exc
            else:
                await conn.close(timeout=timeout)
                return

    async def listen(self, channel: str, on_notify: Callable[[], None]) -> None:
        """Call `on_notify` on every NOTIFY on `channel`, reconnecting until cancelled.

        It also calls it after each (re)connection, since notifications sent while
        disconnected are lost.
        """
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self.timeout)
            except (*_UNREACHABLE, asyncpg.PostgresError) as exc:
                log.warning("NOTIFY listener cannot connect", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn, ev=closed: ev.set())
            try:
                await conn.add_listener(channel, lambda *_args: on_notify())
                on_notify()
                while not closed.is_set():
                    try:  # not wait_for, which on Python 3.11 can swallow a cancel
                        async with asyncio.timeout(10.0):
                            await closed.wait()
                    except TimeoutError:
                        await conn.execute("SELECT 1", timeout=self.timeout)
            except (*_UNREACHABLE, asyncpg.PostgresError) as exc:
                log.warning("NOTIFY listener lost its connection", error=str(exc))
            finally:
                conn.terminate()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                try:
                    yield conn
                except TimeoutError:
                    # Nothing answered in time. asyncpg would now wait, on release, for a
                    # cancel request that cannot get through either: drop the connection.
                    conn.terminate()
                    raise
        except _UNREACHABLE as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"PostgreSQL is unreachable: {reason}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        async with self._conn() as conn:
            left = max(deadline - loop.time(), 0.001)
            rows: list[asyncpg.Record] = await conn.fetch(self._q[name], *args, timeout=left)
            return rows

    async def apply_schema(self) -> bool:
        """Apply `schema.sql` unless it is applied already; True when it was applied.

        Serialised between instances by an advisory lock. The digest of the applied file
        is recorded, so an instance starting next to running ones changes nothing and
        locks nothing when the schema is current.
        """
        digest = schema_digest()
        async with self._conn() as conn, conn.transaction():
            await conn.execute(self._q["apply_schema_lock"])
            if await conn.fetchval(self._q["schema_versioned"]) and (
                await conn.fetchval(self._q["applied_schema_digest"]) == digest
            ):
                return False
            await conn.execute(self._q["lock_for_schema"])
            await conn.execute(schema_sql())
            await conn.execute(self._q["record_schema_digest"], digest)
            return True

    async def ping(self) -> bool:
        """True when PostgreSQL answers and the schema is there."""
        async with self._conn() as conn:
            return bool(await conn.fetchval(self._q["schema_present"]))

    async def insert_tasks(self, batch: Sequence[NewTask]) -> InsertResult:
        """Insert a batch in one statement; tasks whose key exists are returned as existing."""
        rows = await self._fetch(
            "insert_tasks",
            [t.id for t in batch],
            [t.title for t in batch],
            [t.description for t in batch],
            [t.payload for t in batch],
            [t.source.value for t in batch],
            [t.idempotency_key for t in batch],
            [t.fingerprint() if t.idempotency_key else None for t in batch],
        )
        created = [_task(r) for r in rows]
        created_ids = {t.id for t in created}
        missing_keys = [
            t.idempotency_key for t in batch if t.idempotency_key and t.id not in created_ids
        ]
        existing: dict[str, tuple[Task, bytes | None]] = {}
        if missing_keys:
            for row in await self._fetch("tasks_by_keys", missing_keys):
                existing[row["idempotency_key"]] = (_task(row), row["fingerprint"])
        return InsertResult(created, existing)

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
            rows = await self._fetch(
                "list_tasks_by_status", created_at, task_id, limit, [s.value for s in statuses]
            )
        else:
            rows = await self._fetch("list_tasks", created_at, task_id, limit)
        return [_task(r) for r in rows]

    async def task_events(self, task_id: uuid.UUID) -> list[StatusEvent]:
        """The status history of a task, oldest first."""
        rows = await self._fetch("task_events", task_id)
        return [StatusEvent(Status(r["status"]), r["attempt"], r["at"]) for r in rows]

    async def claim(
        self, owner: str, lease_s: float, limit: int, running: Collection[uuid.UUID] = ()
    ) -> list[tuple[Claim, bool]]:
        """Claim up to `limit` new or lease-expired tasks; each with whether it was recovered.

        Tasks in `running` (attempts this instance still runs) are never claimed again.
        """
        rows = await self._fetch("claim_tasks", owner, lease_s, limit, list(running))
        return [(_claim(r), r["recovered"]) for r in rows]

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

    async def renew(self, ids: Iterable[uuid.UUID], owner: str, lease_s: float) -> set[uuid.UUID]:
        """Extend the leases `owner` holds on `ids`; return those still held."""
        rows = await self._fetch("renew_leases", list(ids), owner, lease_s)
        return {r["id"] for r in rows}

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

    async def prune_finished(self, retention_s: int, limit: int) -> int | None:
        """Delete up to `limit` terminal tasks finished more than `retention_s` ago.

        One short transaction, which first takes the prune lock: None (nothing deleted)
        when another instance holds it, else how many tasks were deleted.
        """
        async with self._conn() as conn, conn.transaction():
            if not await conn.fetchval(self._q["prune_lock"], timeout=PRUNE_TIMEOUT_S):
                return None
            deleted: int = await conn.fetchval(
                self._q["prune_finished"], retention_s, limit, timeout=PRUNE_TIMEOUT_S
            )
            return deleted

    async def oldest_new(self) -> datetime | None:
        """When the oldest task still `new` was created, or None."""
        rows = await self._fetch("oldest_new")
        value: datetime | None = rows[0][0] if rows else None
        return value
