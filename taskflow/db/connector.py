"""The PostgreSQL connection of taskflow: a pool, the error translation, the probe.

asyncpg errors are translated here and nowhere else: unreachable or too slow becomes
`StoreUnavailable` (HTTP 503), anything else PostgreSQL rejects becomes `StoreError`. The
connector runs named queries; it knows nothing of tasks (that is `TaskStore`), HTTP or actors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import structlog

from taskflow.backoff import Backoff
from taskflow.db.queries import queries
from taskflow.errors import StoreConflict, StoreError, StoreUnavailable, TaskflowError

log = structlog.get_logger(__name__)

# Errors that mean "PostgreSQL is not there right now", as opposed to "it said no".
UNREACHABLE: tuple[type[BaseException], ...] = (
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

# How long one call may take, connection wait and query together.
CALL_TIMEOUT_S = 5.0


def translate(exc: BaseException) -> TaskflowError:
    """The taskflow exception for an asyncpg (or socket) error."""
    if isinstance(exc, UNREACHABLE):
        reason = str(exc) or type(exc).__name__
        return StoreUnavailable(f"PostgreSQL is unreachable: {reason}")
    if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):  # SQLSTATE class 40
        return StoreConflict(
            "PostgreSQL rolled the change back for a conflict with a concurrent one"
            f" ({exc.sqlstate}); nothing was written: retry"
        )
    return StoreError(f"PostgreSQL error: {exc}")


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb with orjson on every connection taskflow opens."""
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


async def connect_once(dsn: str, timeout: float) -> asyncpg.Connection:
    """One connection outside the pool (for LISTEN); raises taskflow errors."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=timeout)
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        raise translate(exc) from exc
    return conn


class Database:
    """A pool of connections to PostgreSQL and the named queries run on it.

    Every call is bounded by `timeout` seconds, waiting for a pooled connection and
    running the query together: during a network partition, where nothing answers and
    only timeouts end a call, a request gets its 503 in that time.
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str, timeout: float = CALL_TIMEOUT_S) -> None:
        self._pool = pool
        self.dsn = dsn
        self.queries = queries()
        self.timeout = timeout

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dsn: str, *, max_size: int = 10, timeout: float = CALL_TIMEOUT_S
    ) -> AsyncIterator[Database]:
        """Open a pool on `dsn`, yield a database on it, close the pool on exit."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                init=init_connection,
                reset=_reset_connection,
                timeout=timeout,
                command_timeout=timeout,
                max_inactive_connection_lifetime=60,
                # Plan every execution for its own arguments. asyncpg prepares each
                # statement, and after five runs PostgreSQL may switch to a generic plan made
                # for no particular arguments: wrong for a list by a rare status or a title
                # prefix. Caching the plans of the statements that find rows by primary key
                # gained nothing measurable (README, "Plan caching").
                server_settings={"plan_cache_mode": "force_custom_plan"},
            )
        except UNREACHABLE as exc:
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
        backoff = Backoff(first=0.2, cap=3.0)
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=min(timeout, 10.0))
            except UNREACHABLE as exc:
                delay = backoff.take()
                if loop.time() + delay > deadline:
                    raise StoreUnavailable(f"PostgreSQL is unreachable: {exc}") from exc
                log.warning("db.unreachable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"PostgreSQL refused the connection: {exc}") from exc
            else:
                await conn.close(timeout=timeout)
                return

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors inside the block come out translated."""
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                try:
                    yield conn
                except TimeoutError:
                    # Nothing answered in time. asyncpg would now wait, on release, for a
                    # cancel request that cannot get through either: drop the connection.
                    conn.terminate()
                    raise
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise translate(exc) from exc

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        """Run the named query `name` and return its rows, within the call timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        async with self.connection() as conn:
            left = max(deadline - loop.time(), 0.001)
            rows: list[asyncpg.Record] = await conn.fetch(self.queries[name], *args, timeout=left)
            return rows

    async def ping(self) -> bool:
        """True when PostgreSQL answers and the schema is there."""
        async with self.connection() as conn:
            return bool(await conn.fetchval(self.queries["schema_present"]))
