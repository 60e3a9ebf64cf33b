"""The bench's meter of PostgreSQL's CPU time, against the local server."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from taskflow_bench.server_cpu import ServerCpu

BUSY = "SELECT count(*) FROM generate_series(1, 3000000) AS g WHERE g % 7 = 3"


async def _busy_backend(url: str) -> int:
    """Run a query that takes CPU time on a new backend, close it; its pid."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.fetchval(BUSY)
        return pid
    finally:
        await conn.close()


def _exists(pid: int) -> bool:
    """Whether process `pid` exists (a read of /proc: no wait)."""
    return os.path.exists(f"/proc/{pid}")


async def test_the_meter_counts_backends_that_have_exited(db_url: str) -> None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        meter = ServerCpu.of_backend(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()
    assert meter is not None
    before = meter.seconds()
    busy = await _busy_backend(db_url)
    for _ in range(100):  # the postmaster reaps the backend just after it exits
        if not _exists(busy):
            break
        await asyncio.sleep(0.02)
    assert not _exists(busy)
    spent = meter.seconds() - before
    assert spent >= 0.05  # 3,000,000 rows take well over 50 ms of CPU


def test_a_process_that_is_not_a_postgres_backend_has_no_meter() -> None:
    assert ServerCpu.of_backend(os.getpid()) is None
    assert ServerCpu.of_backend(2**22 + 1) is None  # above pid_max: no such process
