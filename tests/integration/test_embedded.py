"""The embedded PostgreSQL server: persistence, sharing between users and processes, shutdown."""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from taskflow.db.embedded import embedded_postgres
from tests.integration.embedded import private_data_dir

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def pgdata() -> Iterator[pathlib.Path]:
    """Where this test's embedded server keeps its data (see `private_data_dir`)."""
    with private_data_dir() as path:
        yield path


# A second service process: joins the server, reports, waits for a line on stdin, leaves.
CHILD = """
import asyncio, pathlib, sys
import asyncpg
from taskflow.db.embedded import embedded_postgres

async def main() -> None:
    async with embedded_postgres(pathlib.Path(sys.argv[1])) as dsn:
        conn = await asyncpg.connect(dsn)
        started = await conn.fetchval("SELECT pg_postmaster_start_time()")
        await conn.close()
        print("READY", started.isoformat(), dsn, flush=True)
        await asyncio.to_thread(sys.stdin.readline)

asyncio.run(main())
"""


class Child:
    """A `python -c CHILD` process using the embedded server in `pgdata`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output: list[str] = []

    @classmethod
    async def start(cls, pgdata: pathlib.Path) -> Child:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(pgdata), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc)

    async def ready(self) -> tuple[str, str]:
        """Wait until the child is connected; return (server start time, dsn)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while line := (await self.proc.stdout.readline()).decode():
                self.output.append(line)
                if line.startswith("READY "):
                    _, started, dsn = line.split()
                    return started, dsn
        pytest.fail(f"child exited before joining:\n{''.join(self.output)}")

    async def leave(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"leave\n")
        await self.proc.stdin.drain()
        output, _ = await asyncio.wait_for(self.proc.communicate(), 60)
        assert self.proc.returncode == 0, "".join(self.output) + output.decode()


def postmaster_running(pgdata: pathlib.Path) -> bool:
    return (pgdata / "postmaster.pid").exists()


async def assert_stopped(pgdata: pathlib.Path, dsn: str) -> None:
    assert not postmaster_running(pgdata)
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):  # no socket, or nobody on it
        await asyncpg.connect(dsn)


async def test_data_survives_restart(pgdata: pathlib.Path) -> None:
    async with embedded_postgres(pgdata) as dsn:
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT current_database()") == "taskflow"
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO t VALUES (1, 'kept')")
        await conn.close()
    await assert_stopped(pgdata, dsn)

    async with embedded_postgres(pgdata) as dsn2:
        assert dsn2 == dsn
        pool = await asyncpg.create_pool(dsn2, min_size=1, max_size=2)
        async with pool:
            assert await pool.fetchval("SELECT name FROM t WHERE id = 1") == "kept"
    await assert_stopped(pgdata, dsn)


async def test_two_users_in_one_process_share_the_server(pgdata: pathlib.Path) -> None:
    both_inside = asyncio.Barrier(2)

    async def use() -> str:
        async with embedded_postgres(pgdata) as dsn:
            await both_inside.wait()
            conn = await asyncpg.connect(dsn)
            started: str = (await conn.fetchval("SELECT pg_postmaster_start_time()")).isoformat()
            await conn.close()
            await both_inside.wait()
            return started

    first, second = await asyncio.gather(use(), use())
    assert first == second
    assert not postmaster_running(pgdata)


async def test_two_processes_share_one_server_until_the_last_leaves(
    pgdata: pathlib.Path,
) -> None:
    a, b = await Child.start(pgdata), await Child.start(pgdata)
    (started_a, dsn), (started_b, dsn_b) = await asyncio.gather(a.ready(), b.ready())
    assert (started_a, dsn) == (started_b, dsn_b), "one server for both processes"

    await a.leave()
    assert postmaster_running(pgdata), "b still uses the server"
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    await b.leave()
    await assert_stopped(pgdata, dsn)


async def test_a_killed_user_does_not_keep_the_server_running(pgdata: pathlib.Path) -> None:
    child = await Child.start(pgdata)
    await child.ready()
    child.proc.kill()
    await child.proc.communicate()
    assert postmaster_running(pgdata), "PostgreSQL outlives a kill -9 of its user"

    async with embedded_postgres(pgdata) as dsn:
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    await assert_stopped(pgdata, dsn)


# A user whose start hangs: the package waits for its lock without a bound.
HUNG = """
import asyncio, pathlib, sys
from taskflow.db.embedded import embedded_postgres
from taskflow.errors import EmbeddedDatabaseError

async def main() -> None:
    try:
        async with embedded_postgres(pathlib.Path(sys.argv[1]), start_timeout=1):
            print("STARTED", flush=True)
    except EmbeddedDatabaseError as exc:
        print("FAILED", exc.message, flush=True)

asyncio.run(main())
"""


async def test_a_start_that_hangs_fails_in_time_and_does_not_hold_up_the_exit(
    tmp_path: pathlib.Path, pgdata: pathlib.Path
) -> None:
    # The package's lock lives under XDG_RUNTIME_DIR; hold a private one, as a process stuck
    # in a start would.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    runtime.chmod(0o700)  # platformdirs accepts only a private XDG_RUNTIME_DIR
    lockfile = runtime / "python_PostgresServer" / ".lockfile"
    lockfile.parent.mkdir(mode=0o700)
    with lockfile.open("a+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(runtime)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HUNG, str(pgdata), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail("the process did not exit after its start timed out")
    assert proc.returncode == 0, output.decode()
    assert f"FAILED embedded PostgreSQL in {pgdata} was not ready within 1s" in (output.decode())
    assert not postmaster_running(pgdata)


async def test_a_server_slower_than_pg_ctl_allows_is_waited_for(
    pgdata: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The package kills `pg_ctl start` after 10 s but not the server it launched. Here pg_ctl
    # gives up at once (-W: no wait), as it does on a machine too loaded to start in 10 s.
    postgres_server = importlib.import_module("embedded_postgres.postgres_server")
    real_pg_ctl = postgres_server.pg_ctl

    def impatient_pg_ctl(args: list[str], **kwargs: Any) -> str:
        if "start" not in args:
            return str(real_pg_ctl(args, **kwargs))
        real_pg_ctl(["-W" if arg == "-w" else arg for arg in args], **kwargs)
        server_log = pathlib.Path(args[args.index("-l") + 1])
        for _ in range(100):  # after 10 s the launched server has long opened its log
            if server_log.exists():
                break
            time.sleep(0.1)
        raise subprocess.TimeoutExpired("pg_ctl", 10)

    monkeypatch.setattr(postgres_server, "pg_ctl", impatient_pg_ctl)
    async with embedded_postgres(pgdata) as dsn:
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT current_database()") == "taskflow"
        await conn.close()
    await assert_stopped(pgdata, dsn)
