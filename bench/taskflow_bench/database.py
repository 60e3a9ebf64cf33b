"""The bench's own PostgreSQL database: created for a run, filled, watched, dropped."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from taskflow.db.migrate import apply_pending
from taskflow.db.queries import parse_queries
from taskflow_bench.server_cpu import ServerCpu

_NAME = re.compile(r"^taskflow_bench_[0-9a-f]{12}$")
COPY_CHUNK = 10_000
STORED_CHUNK = 50_000  # terminal rows per COPY statement (one history row each)
FAILED_EVERY = 20  # one stored task in 20 failed, the others completed
_STORED_COLUMNS = (
    "id", "title", "source", "status", "attempts", "result", "error",
    "created_at", "updated_at", "started_at", "finished_at",
)  # fmt: skip
_RESULT = '{"ok": true}'
POLL_S = 0.25  # each look is a count over the tasks table: not too often


@cache
def queries() -> dict[str, str]:
    """The bench's named queries."""
    text = resources.files("taskflow_bench").joinpath("queries.sql").read_text("utf-8")
    return parse_queries(text)


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url`."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def new_database_name() -> str:
    """A fresh, unique name for a bench database."""
    return f"taskflow_bench_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class Window:
    """How many tasks a time window covers, and its bounds (PostgreSQL's clock)."""

    tasks: int
    first: datetime | None
    last: datetime | None

    @property
    def seconds(self) -> float:
        """The length of the window, 0 when it is empty."""
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()


class BenchDatabase:
    """A connection to a database that exists only for one bench run."""

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        self._conn = conn
        self.url = url
        self._q = queries()

    @classmethod
    @asynccontextmanager
    async def create(cls, admin_url: str, timeout: float = 30.0) -> AsyncIterator[BenchDatabase]:
        """Create a database with taskflow's schema, yield it, drop it whatever happens."""
        name = new_database_name()
        await _admin(admin_url, queries()["create_database"], name, timeout)
        try:
            url = database_url(admin_url, name)
            conn = await asyncpg.connect(url, timeout=timeout, command_timeout=600)
            try:
                await apply_pending(conn)
                yield cls(conn, url)
            finally:
                await conn.close(timeout=timeout)
        finally:
            await _admin(admin_url, queries()["drop_database"], name, timeout)

    async def insert_waiting(self, count: int, *, at_once: bool = False) -> None:
        """Insert `count` new tasks with COPY (the triggers write their history), then ANALYZE.

        ANALYZE gives the planner the statistics autovacuum would have gathered by the
        time a real backlog of that size is processed. `at_once`: in one transaction, so
        that a running service sees the whole backlog appear at one moment.
        """
        async with self._conn.transaction() if at_once else contextlib.nullcontext():
            for start in range(0, count, COPY_CHUNK):
                ids = [uuid.uuid4() for _ in range(min(COPY_CHUNK, count - start))]
                async with self._conn.transaction():
                    await self._conn.copy_records_to_table(
                        "tasks",
                        records=[(i, f"bench {start + n}", "http") for n, i in enumerate(ids)],
                        columns=["id", "title", "source"],
                    )
        await self.analyze()

    async def insert_finished(
        self, count: int, *, finished_ago: timedelta, span: timedelta, at_once: bool = True
    ) -> None:
        """Store `count` terminal tasks with COPY, then VACUUM (ANALYZE) the tables.

        One in `FAILED_EVERY` is failed, the others completed; they finished one after the
        other over `span`, the last `finished_ago` before now (each ran a millisecond, after
        a second of waiting). COPY of rows that are already terminal is the fastest way in:
        one statement per `STORED_CHUNK` rows, no claim or finish to replay, and the insert
        trigger still writes one history row per task. `at_once`: one transaction for all.
        """
        now = await self.clock()
        first = now - finished_ago - span
        step = span / max(count, 1)
        # A task is born `new` (or claimed): the trigger that says so is set aside while
        # outcomes are copied in; the history and count triggers still run.
        await self._conn.execute(self._q["allow_finished_inserts"])
        try:
            async with self._conn.transaction() if at_once else contextlib.nullcontext():
                for start in range(0, count, STORED_CHUNK):
                    end = min(start + STORED_CHUNK, count)
                    await self._conn.copy_records_to_table(
                        "tasks",
                        records=[_stored_row(n, first + step * n) for n in range(start, end)],
                        columns=_STORED_COLUMNS,
                    )
        finally:
            await self._conn.execute(self._q["forbid_finished_inserts"])
        await self._conn.execute(self._q["vacuum_analyze"])

    async def analyze(self) -> None:
        """ANALYZE the task tables, as taskflow's analyzer does after a burst."""
        await self._conn.execute(self._q["analyze"])

    async def server_cpu(self) -> ServerCpu | None:
        """A meter of the server's CPU time; None when the server is on another machine."""
        return ServerCpu.of_backend(int(await self._conn.fetchval(self._q["backend_pid"])))

    async def clock(self) -> datetime:
        """PostgreSQL's `now()`."""
        value: datetime = await self._conn.fetchval(self._q["clock"])
        return value

    async def unfinished(self) -> int:
        """How many tasks are new or in progress (an index scan, not a table scan)."""
        return int(await self._conn.fetchval(self._q["unfinished"]))

    async def wait_unfinished(
        self, timeout: float, on_progress: Callable[[int], None] = lambda _: None
    ) -> None:
        """Poll until no task is new or in progress; `on_progress(left)` after each look."""
        async with asyncio.timeout(timeout):
            while (left := await self.unfinished()) > 0:
                on_progress(left)
                await asyncio.sleep(POLL_S)
            on_progress(0)

    async def finished_window(self, since: datetime) -> Window:
        """First start to last finish of the tasks finished since `since`."""
        row = await self._conn.fetchrow(self._q["finished_window"], since)
        assert row is not None
        return Window(int(row["tasks"]), row["first_start"], row["last_finish"])

    async def finished_before(self, cutoff: datetime) -> int:
        """How many terminal tasks finished before `cutoff` are stored."""
        return int(await self._conn.fetchval(self._q["finished_before"], cutoff))

    async def sample_ids(self, count: int) -> list[uuid.UUID]:
        """Up to `count` task ids taken at random."""
        return [r["id"] for r in await self._conn.fetch(self._q["sample_ids"], count)]

    async def progress(self) -> tuple[int, int]:
        """(tasks, terminal tasks)."""
        row = await self._conn.fetchrow(self._q["progress"])
        assert row is not None
        return int(row["total"]), int(row["terminal"])

    async def source_count(self, source: str) -> int:
        """How many tasks came from `source`."""
        return int(await self._conn.fetchval(self._q["source_count"], source))

    async def wait_terminal(
        self, expected: int, timeout: float, on_progress: Callable[[int], None]
    ) -> None:
        """Poll until `expected` tasks are terminal; `on_progress(terminal)` after each look."""
        async with asyncio.timeout(timeout):
            while True:
                _, terminal = await self.progress()
                on_progress(terminal)
                if terminal >= expected:
                    return
                await asyncio.sleep(POLL_S)

    async def processing_window(self) -> Window:
        """First start to last finish of the terminal tasks."""
        row = await self._conn.fetchrow(self._q["processing_window"])
        assert row is not None
        return Window(int(row["tasks"]), row["first_start"], row["last_finish"])

    async def creation_window(self, source: str, low: float, high: float) -> Window:
        """Creation times of the tasks from `source` at the `low` and `high` quantiles."""
        row = await self._conn.fetchrow(self._q["creation_window"], source, low, high)
        assert row is not None
        return Window(int(row["tasks"]), row["first"], row["last"])

    async def end_to_end_window(self, source: str) -> Window:
        """The terminal tasks from `source`: their first creation to their last finish."""
        row = await self._conn.fetchrow(self._q["end_to_end_window"], source)
        assert row is not None
        return Window(int(row["tasks"]), row["first"], row["last"])

    async def running_ids(self) -> list[uuid.UUID]:
        """The tasks in progress."""
        return [r["id"] for r in await self._conn.fetch(self._q["running_ids"])]

    async def cancelled_at(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime | None]:
        """When each task of `ids` was cancelled (None while it is not)."""
        rows = await self._conn.fetch(self._q["cancelled_at"], ids)
        return {r["id"]: r["cancelled_at"] for r in rows}

    async def incomplete_histories(self) -> int:
        """Terminal tasks without exactly their three status changes."""
        value = await self._conn.fetchval(self._q["incomplete_histories"])
        return int(value)


def _stored_row(n: int, finished: datetime) -> tuple[object, ...]:
    """The COPY row of stored task `n`, finished at `finished`."""
    failed = n % FAILED_EVERY == FAILED_EVERY - 1
    started = finished - timedelta(milliseconds=1)
    created = started - timedelta(seconds=1)
    return (
        uuid.uuid4(), f"stored {n}", "http", "failed" if failed else "completed", 1,
        None if failed else _RESULT, "bench: stored failure" if failed else None,
        created, finished, started, finished,
    )  # fmt: skip


async def _admin(admin_url: str, template: str, name: str, timeout: float) -> None:
    if not _NAME.match(name):
        raise ValueError(f"not a bench database name: {name!r}")
    conn = await asyncpg.connect(admin_url, timeout=timeout)
    try:
        await conn.execute(template.format(database=f'"{name}"'), timeout=timeout)
    finally:
        await conn.close(timeout=timeout)
