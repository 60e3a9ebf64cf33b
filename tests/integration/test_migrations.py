"""Migrations: a database created by taskflow before migrations upgrades with nothing lost,
any number of instances may start on it at once, and `schema.sql` describes the result."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from taskflow.db.migrate import latest_version, migrate, migrations
from taskflow.models import TRANSITIONS, Status
from tests.conftest import ADMIN_URL, database_url

SCHEMA_SQL = Path(__file__).parents[2] / "schema.sql"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql, timeout=30)
    finally:
        await conn.close()


@pytest.fixture
async def empty_db() -> AsyncIterator[Callable[[], str]]:
    """Makes empty databases, dropped after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"taskflow_mig_{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    for name in names:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _create(name: str, sql: str) -> str:
    await _admin(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    return url


# A database as the taskflow before migrations left it: a task in each status, with history.
LEGACY_DATA = """
INSERT INTO tasks (id, title, source, status, attempts, started_at, finished_at, result, error,
                   lease_owner, lease_expires_at, idempotency_key)
VALUES
 ('00000000-0000-0000-0000-000000000001', 'waiting', 'http', 'new', 0, NULL, NULL, NULL, NULL,
  NULL, NULL, 'key-1'),
 ('00000000-0000-0000-0000-000000000002', 'running', 'amqp', 'in_progress', 1, now(), NULL,
  NULL, NULL, 'old-instance', now() + interval '30 s', NULL),
 ('00000000-0000-0000-0000-000000000003', 'done', 'http', 'completed', 2, now(), now(),
  '{"work_s": 1}', NULL, NULL, NULL, NULL),
 ('00000000-0000-0000-0000-000000000004', 'broken', 'http', 'failed', 1, now(), now(),
  NULL, 'boom', NULL, NULL, NULL);
INSERT INTO task_events (task_id, status, attempt) VALUES
 ('00000000-0000-0000-0000-000000000001', 'new', 0),
 ('00000000-0000-0000-0000-000000000002', 'new', 0),
 ('00000000-0000-0000-0000-000000000002', 'in_progress', 1),
 ('00000000-0000-0000-0000-000000000003', 'new', 0),
 ('00000000-0000-0000-0000-000000000003', 'in_progress', 1),
 ('00000000-0000-0000-0000-000000000003', 'in_progress', 2),
 ('00000000-0000-0000-0000-000000000003', 'completed', 2),
 ('00000000-0000-0000-0000-000000000004', 'new', 0),
 ('00000000-0000-0000-0000-000000000004', 'in_progress', 1),
 ('00000000-0000-0000-0000-000000000004', 'failed', 1);
"""

# schema.sql of the taskflow before migrations, as it shipped (digest table included).
LEGACY_SCHEMA = (
    migrations()[0].sql + "\nCREATE TABLE IF NOT EXISTS taskflow_schema (digest text NOT NULL);\n"
)


async def test_a_database_of_the_version_before_migrations_upgrades_with_nothing_lost(
    empty_db: Callable[[], str],
) -> None:
    url = await _create(empty_db(), LEGACY_SCHEMA + LEGACY_DATA)
    applied = await migrate(url)
    assert [m.version for m in applied] == list(range(2, latest_version() + 1))

    conn = await asyncpg.connect(url, timeout=10)
    try:
        tasks = await conn.fetch("SELECT title, status, attempts, seq FROM tasks ORDER BY id")
        assert [tuple(t) for t in tasks] == [
            ("waiting", "new", 0, 1),
            ("running", "in_progress", 1, 2),
            ("done", "completed", 2, 4),
            ("broken", "failed", 1, 3),
        ]
        events = await conn.fetch(
            "SELECT t.title, e.seq, e.status, e.attempt FROM task_events e "
            "JOIN tasks t ON t.id = e.task_id WHERE t.title = 'done' ORDER BY e.seq"
        )
        assert [tuple(e) for e in events] == [
            ("done", 1, "new", 0),
            ("done", 2, "in_progress", 1),
            ("done", 3, "in_progress", 2),
            ("done", 4, "completed", 2),
        ]
        counts = dict(await conn.fetch("SELECT status, n FROM task_counts"))
        assert counts == {"new": 1, "in_progress": 1, "completed": 1, "failed": 1, "cancelled": 0}
        assert await conn.fetchval("SELECT to_regclass('taskflow_schema')") is None
        versions = await conn.fetch("SELECT version FROM taskflow_migrations ORDER BY version")
        assert [v["version"] for v in versions] == list(range(1, latest_version() + 1))

        # An event is its task and seq (migration 8 made that the key).
        with pytest.raises(asyncpg.UniqueViolationError, match="task_events_pkey"):
            await conn.execute(
                "INSERT INTO task_events (task_id, seq, status, attempt, xid)"
                " SELECT task_id, seq, status, attempt, xid FROM task_events LIMIT 1"
            )

        # The upgraded database goes on: the running task finishes with the next seq.
        await conn.execute(
            "UPDATE tasks SET status = 'completed', result = '{}', finished_at = now(),"
            " updated_at = now(), lease_owner = NULL, lease_expires_at = NULL"
            " WHERE title = 'running'"
        )
        last = await conn.fetchrow(
            "SELECT e.seq, e.status FROM task_events e JOIN tasks t ON t.id = e.task_id"
            " WHERE t.title = 'running' ORDER BY e.seq DESC LIMIT 1"
        )
        assert tuple(last) == (3, "completed")
    finally:
        await conn.close()


async def test_instances_starting_at_once_upgrade_the_database_once(
    empty_db: Callable[[], str],
) -> None:
    url = await _create(empty_db(), LEGACY_SCHEMA + LEGACY_DATA)
    results = await asyncio.gather(*(migrate(url) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, latest_version() - 1]
    assert await migrate(url) == []


async def test_an_empty_database_gets_every_migration(empty_db: Callable[[], str]) -> None:
    url = await _create(empty_db(), "SELECT 1")
    assert [m.version for m in await migrate(url)] == list(range(1, latest_version() + 1))


CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace""",
}


async def _catalog(url: str) -> dict[str, set[tuple[object, ...]]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return {k: {tuple(r) for r in await conn.fetch(q)} for k, q in CATALOG.items()}
    finally:
        await conn.close()


async def test_schema_sql_is_what_the_migrations_build(empty_db: Callable[[], str]) -> None:
    migrated = await _create(empty_db(), "SELECT 1")
    await migrate(migrated)
    written = await _create(empty_db(), SCHEMA_SQL.read_text())
    built, described = await _catalog(migrated), await _catalog(written)
    for kind in CATALOG:
        assert built[kind] == described[kind], kind


async def test_the_status_set_and_transitions_agree_between_sql_and_python(db_url: str) -> None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        assert await conn.fetchval("SELECT taskflow_statuses()") == [s.value for s in Status]
        for status in Status:
            terminal = await conn.fetchval("SELECT taskflow_is_terminal($1)", status.value)
            assert terminal == status.terminal, status
        for old, new in itertools.product(Status, repeat=2):
            allowed = await conn.fetchval(
                "SELECT taskflow_transition_allowed($1, $2)", old.value, new.value
            )
            assert allowed == ((old, new) in TRANSITIONS), (old, new)
    finally:
        await conn.close()
