"""PostgreSQL outages, made with a TCP proxy between the service and PostgreSQL.

While PostgreSQL is away — down (connections refused) or behind a partition (no packet
comes back, only timeouts end a call) — creates answer 503 with Retry-After in bounded
time, readiness is 503 and liveness 200, outcomes are kept and retried rather than
dropped, and the process stays up. Once PostgreSQL is back everything resumes by itself
and every task that was in flight ends terminal.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from taskflow_bench.harness import events
from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import (
    create_one,
    create_tasks,
    snapshot,
    terminal_write,
    wait_all_terminal,
    wait_counts,
)
from tests.integration.proxy import TcpProxy

LEASE_S = 3.0
# An answer during the outage may take the store's timeouts (pool acquire, then the
# command) and must never hang: this bound is what "bounded" means here.
ANSWER_BOUND_S = 25.0


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=ANSWER_BOUND_S)) as response:
        await response.read()
        return response.status, time.monotonic() - started


async def _creates_during_outage(session: aiohttp.ClientSession, service: Service) -> float:
    """Five creates at once: each 503 with Retry-After; return the slowest answer's time."""

    async def one(n: int) -> float:
        started = time.monotonic()
        status, body, headers = await create_one(session, service.url, f"cut-{n}", ANSWER_BOUND_S)
        assert status == 503, body
        assert body["error"]["code"] in ("database_unavailable", "overloaded"), body
        assert int(headers["Retry-After"]) > 0
        return time.monotonic() - started

    return max(await asyncio.gather(*(one(n) for n in range(5))))


@pytest.mark.parametrize("mode", ["down", "partition"])
async def test_postgres_outage_is_survived(
    fleet: Fleet, pg_proxy: tuple[TcpProxy, str], mode: str
) -> None:
    proxy, proxied_url = pg_proxy
    service = await fleet.start(
        "service",
        database_url=proxied_url,
        processors=100,
        work_min_s=1.0,
        work_max_s=2.0,
        lease_s=LEASE_S,
    )
    session = fleet.session
    ids = await create_tasks(session, service.url, 100, concurrency=20)
    await wait_counts(fleet.db_url, 30, in_progress=50)

    if mode == "down":
        await proxy.stop()  # connections refused, open ones cut
    else:
        proxy.partition()  # nothing answers
    cut_at = time.monotonic()
    create_s = await _creates_during_outage(session, service)
    ready, ready_s = await _timed_get(session, f"{service.url}/health/ready")
    assert ready == 503
    live, _ = await _timed_get(session, f"{service.url}/health/live")
    assert live == 200
    read, read_s = await _timed_get(session, f"{service.url}/tasks/{ids[0]}")
    assert read == 503
    # Processors finish their work meanwhile: their outcomes are retried, not dropped.
    async with asyncio.timeout(60):
        while True:
            metrics = await service.metrics()
            if value(metrics, "taskflow_status_write_retries_total") > 0:
                break
            await asyncio.sleep(0.2)
    assert value(metrics, "taskflow_db_up") == 0
    # Stay cut for longer than the lease, so that leases run out during the outage.
    await asyncio.sleep(max(cut_at + LEASE_S + 1 - time.monotonic(), 0))
    assert service.running
    if mode == "down":
        await proxy.start()
    else:
        proxy.heal()
    restored_at = time.monotonic()

    await service.wait_ready(timeout=60)
    status, body, _ = await create_one(session, service.url, "after the outage")
    assert status == 201, body
    await wait_all_terminal(fleet.db_url, len(ids) + 1, 60)
    resumed_s = time.monotonic() - restored_at

    rows = await snapshot(fleet.db_url)
    assert len(rows) == len(ids) + 1  # the creates answered 503 made no task
    for row in rows.values():
        assert row.history == row.expected_history(), row
    assert service.running
    assert not service.events(events.ACTOR_DIED)
    metrics = await service.metrics()
    assert value(metrics, "taskflow_db_up") == 1
    retries = value(metrics, "taskflow_status_write_retries_total")
    second_attempts = sum(r.attempts > 1 for r in rows.values())
    print(
        f"\n{mode}: creates answered 503 within {create_s:.1f} s, readiness in {ready_s:.1f} s, "
        f"reads in {read_s:.1f} s; {retries:.0f} status write retries; all terminal "
        f"{resumed_s:.1f} s after the restore; {second_attempts} tasks needed a second attempt"
    )


async def test_partitioned_instance_is_fenced_after_takeover(
    fleet: Fleet, pg_proxy: tuple[TcpProxy, str]
) -> None:
    # Only one instance loses PostgreSQL. Another takes its attempts over when their
    # leases run out; when the partition heals, the retried outcomes of the cut-off
    # instance are fenced and every task keeps the newer attempt's outcome.
    proxy, proxied_url = pg_proxy
    work = {"work_min_s": 1.0, "work_max_s": 2.0, "lease_s": LEASE_S}
    cut_off = await fleet.start("cut-off", database_url=proxied_url, processors=100, **work)
    await create_tasks(fleet.session, cut_off.url, 40, concurrency=20)
    await wait_counts(fleet.db_url, 30, in_progress=20)
    proxy.partition()
    await asyncio.sleep(0.5)  # statements that got through before the cut are committed
    held = {
        i: t
        for i, t in (await snapshot(fleet.db_url)).items()
        if t.status == "in_progress" and t.lease_owner == cut_off.owner
    }
    other = await fleet.start("other", processors=100, **work)
    async with asyncio.timeout(LEASE_S + 30):
        while True:
            rows = await snapshot(fleet.db_url)
            if all(rows[i].attempts > t.attempts for i, t in held.items()):
                break
            await asyncio.sleep(0.1)
    proxy.heal()
    await wait_all_terminal(fleet.db_url, 40, 60)
    # The attempts the cut-off instance really ran. A claim can commit while its answer is
    # lost in the partition: such a task is held in PostgreSQL but was never started.
    started = {
        uuid.UUID(e["task_id"]) for e in cut_off.events(events.STATUS_CHANGED, status="in_progress")
    }
    ran = started & set(held)
    assert ran
    async with asyncio.timeout(60):  # the cut-off instance's retried writes get through
        while True:
            fenced = [e for i in ran for e in cut_off.events(events.FENCED, task_id=str(i))]
            if len(fenced) >= len(ran):
                break
            await asyncio.sleep(0.2)

    rows = await snapshot(fleet.db_url)
    for task_id, was in held.items():
        now = rows[task_id]
        assert now.attempts == was.attempts + 1, now
        assert now.history == now.expected_history(), now
        assert terminal_write(other, task_id, now.attempts)["status"] == now.status
        fenced_here = cut_off.events(events.FENCED, task_id=str(task_id))
        assert len(fenced_here) == (1 if task_id in ran else 0)
    assert cut_off.running
    metrics = await cut_off.metrics()
    assert value(metrics, "taskflow_fenced_writes_total") == len(ran)
    assert value(metrics, "taskflow_status_write_retries_total") > 0
    other_metrics = await other.metrics()
    assert value(other_metrics, "taskflow_lease_recoveries_total") == len(held)


async def test_start_up_waits_for_postgres(fleet: Fleet, pg_proxy: tuple[TcpProxy, str]) -> None:
    # Start-up needs PostgreSQL; it waits for it (up to 30 s) rather than failing at once.
    proxy, proxied_url = pg_proxy
    await proxy.stop()
    service = await fleet.launch("service", database_url=proxied_url)
    await service.wait_log(events.DATABASE_RETRYING, 30)
    assert service.running
    await proxy.start()
    await service.wait_ready(timeout=60)
    status, body, _ = await create_one(fleet.session, service.url, "after start-up")
    assert status == 201, body
