"""The analyzer: a lifecycle table that outgrew its planner statistics is analyzed within
seconds, by one instance, and a table that did not is left alone.

The statistics are what an operator reads in `pg_class.reltuples` (the rows the planner
believes a table has) and `pg_stat_user_tables.analyze_count`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskflow.analyze import Analyzer
from taskflow.config import Settings
from taskflow.db.store import TaskStore
from tests.integration.support import MakeClient, settle, wait_until

WAIT_S = 20.0
LOCK = 7204563211  # the analyze lock of queries.sql


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TaskStore]:
    async with TaskStore.connect(db_url) as store:
        yield store


async def add_tasks(db: asyncpg.Connection, count: int) -> None:
    """`count` new tasks in one statement (their history by the triggers), with this
    backend's table statistics flushed at once instead of within ten seconds."""
    await db.execute(
        "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'burst', 'http'"
        " FROM generate_series(1, $1)",
        count,
    )
    await db.execute("SELECT pg_stat_force_next_flush()")


async def believed_rows(db: asyncpg.Connection, table: str) -> float:
    rows: float = await db.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", table
    )
    return rows


async def analyze_count(db: asyncpg.Connection, table: str) -> int:
    count: int = await db.fetchval(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = $1::regclass", table
    )
    return count


async def analyze_when_stale(analyzer: Analyzer) -> list[str] | None:
    """`analyze_once` as soon as the statistics collector has seen the changes."""
    async with asyncio.timeout(WAIT_S):
        while not (analyzed := await analyzer.analyze_once()):
            if analyzed is None:
                return None
            await asyncio.sleep(0.1)
    return analyzed


async def test_a_burst_is_analyzed_and_a_table_that_did_not_double_is_left_alone(
    store: TaskStore, db: asyncpg.Connection
) -> None:
    analyzer = Analyzer(store)
    assert await analyzer.analyze_once() == []  # a fresh database: nothing changed

    await add_tasks(db, 3000)
    assert await analyze_when_stale(analyzer) == ["task_events", "tasks"]
    assert await believed_rows(db, "tasks") == 3000
    assert await believed_rows(db, "task_events") == 3000  # one `new` event each
    assert await analyzer.analyze_once() == []

    # 2,000 more is less than the 3,000 the statistics know of: autovacuum's business.
    await add_tasks(db, 2000)
    await asyncio.sleep(1.0)
    assert await analyzer.analyze_once() == []
    assert await believed_rows(db, "tasks") == 3000
    # 1,500 more makes 3,500 changes since: the table outgrew its statistics again.
    await add_tasks(db, 1500)
    assert await analyze_when_stale(analyzer) == ["task_events", "tasks"]
    assert await believed_rows(db, "tasks") == 6500


async def test_a_few_changes_to_an_empty_table_are_not_worth_an_analyze(
    store: TaskStore, db: asyncpg.Connection
) -> None:
    await add_tasks(db, 500)  # under MIN_CHANGES
    await asyncio.sleep(1.0)
    assert await Analyzer(store).analyze_once() == []
    assert await analyze_count(db, "tasks") == 0


async def test_only_one_instance_analyzes_at_a_time(
    store: TaskStore, db: asyncpg.Connection, db_url: str
) -> None:
    await add_tasks(db, 2000)
    analyzer = Analyzer(store)
    other = await asyncpg.connect(db_url, timeout=10)
    try:
        async with other.transaction():  # another instance, analyzing
            await other.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
            await wait_until(lambda: store.stale_tables(1000, 1.0))
            assert await analyzer.analyze_once() is None
            assert await analyze_count(db, "tasks") == 0
    finally:
        await other.close()
    assert await analyzer.analyze_once() == ["task_events", "tasks"]
    assert await analyze_count(db, "tasks") == 1


async def test_the_service_analyzes_a_burst_by_itself(
    make_client: MakeClient, settings: Settings, db: asyncpg.Connection
) -> None:
    client = await make_client(settings)
    await add_tasks(db, 2000)
    await settle(client)  # the service ran them all

    async def analyzed() -> bool:
        return await analyze_count(db, "tasks") > 0

    await wait_until(analyzed)
    assert await believed_rows(db, "tasks") == 2000
