"""Versioned migrations: numbered SQL files applied once each, in order, at start-up.

`taskflow/db/migrations/NNNN_name.sql` are applied in one transaction under an advisory
lock, so that any number of instances starting at once upgrade the database exactly once;
each is recorded in `taskflow_migrations`. A database that an earlier taskflow created
(before migrations: it has `tasks` but no record) is at version 1, whose file is that
schema as it was. An instance that finds the database current takes no lock at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import asyncpg
import structlog

from taskflow.db.connector import CALL_TIMEOUT_S, UNREACHABLE, connect_once, translate
from taskflow.db.queries import queries

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with taskflow, in version order (numbers 1, 2, 3… no gaps)."""
    found: list[Migration] = []
    for entry in resources.files("taskflow.db").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {[m.version for m in found]}")
    return tuple(found)


def latest_version() -> int:
    """The version a database has once every migration is applied."""
    return migrations()[-1].version


async def _version(conn: asyncpg.Connection) -> int:
    """0 for an empty database, 1 for one that taskflow created before migrations."""
    q = queries()
    tables = await conn.fetchrow(q["schema_tables"])
    if tables["recorded"]:
        version: int = await conn.fetchval(q["schema_version"])
        return version
    return 1 if tables["created"] else 0


async def apply_pending(conn: asyncpg.Connection) -> list[Migration]:
    """Apply, on `conn`, the migrations the database lacks; return those applied."""
    q = queries()
    if await _version(conn) >= latest_version():
        return []
    async with conn.transaction():
        await conn.execute(q["migration_lock"])
        # Locking the tables also makes this transaction see the catalog as another
        # instance that migrated meanwhile left it (an advisory lock alone does not).
        await conn.execute(q["lock_for_schema"])
        current = await _version(conn)
        pending = [m for m in migrations() if m.version > current]
        if not pending:
            return []
        await conn.execute(q["migrations_table"])
        if current == 1:  # created before migrations were recorded
            await conn.execute(q["record_migration"], 1, migrations()[0].name)
        for migration in pending:
            await conn.execute(migration.sql)
            await conn.execute(q["record_migration"], migration.version, migration.name)
        return pending


async def migrate(dsn: str) -> list[Migration]:
    """Bring the database at `dsn` to the latest version (see `apply_pending`).

    On a connection of its own, without the pool's statement timeout: a migration of a
    large table takes what it takes, once.
    """
    conn = await connect_once(dsn, CALL_TIMEOUT_S)
    try:
        applied = await apply_pending(conn)
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        raise translate(exc) from exc
    finally:
        await conn.close(timeout=CALL_TIMEOUT_S)
    for migration in applied:
        log.info("db.migrated", version=migration.version, migration=migration.name)
    return applied
