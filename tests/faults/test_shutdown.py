"""Graceful shutdown: SIGTERM (or SIGINT, as honcho's Ctrl-C) drains and exits 0.

Intake stops at once (new creates are refused or answered 503 with Retry-After),
running attempts get `TASKFLOW_SHUTDOWN_GRACE_S` to finish, the rest are handed back —
their leases end now, so another instance takes them long before the lease would have
run out — and every outcome already produced is committed before the exit.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import aiohttp
import pytest

from taskflow_bench.harness import events
from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import create_one, create_tasks, snapshot, wait_all_terminal

LEASE_S = 30.0
GRACE_S = 2.0


async def _create_until_exit(
    fleet: Fleet, service: Service
) -> tuple[Counter[str], list[uuid.UUID]]:
    """POST on fresh connections until `service` exits; classify every answer."""
    outcomes: Counter[str] = Counter()
    created: list[uuid.UUID] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while service.running:
            try:
                status, body, headers = await create_one(session, service.url, "late", 10)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.02)
                continue
            if status == 201:
                created.append(uuid.UUID(body["id"]))
            else:
                assert status == 503, body
                assert int(headers["Retry-After"]) > 0
            outcomes[str(status)] += 1
    return outcomes, created


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_hands_back_and_exits_0(fleet: Fleet, signum: signal.Signals) -> None:
    leaving = await fleet.start(
        "leaving",
        processors=50,
        work_min_s=1.0,
        work_max_s=6.0,
        lease_s=LEASE_S,
        shutdown_grace_s=GRACE_S,
    )
    ids = await create_tasks(fleet.session, leaving.url, 40, concurrency=20)
    # Started after the load, so that every running attempt is the leaving instance's.
    taker = await fleet.start(
        "taker",
        processors=50,
        work_min_s=0.2,
        work_max_s=0.5,
        lease_s=LEASE_S,
    )
    before = await snapshot(fleet.db_url)
    held = {i: t for i, t in before.items() if t.status == "in_progress"}
    assert all(t.lease_owner == leaving.owner for t in held.values())
    assert len(held) >= 10

    leaving.signal(signum)
    late = asyncio.create_task(_create_until_exit(fleet, leaving))
    assert await leaving.wait_exit(GRACE_S + 30) == 0
    outcomes, late_ids = await asyncio.wait_for(late, 30)

    # Nothing is left holding a lease of the instance that left.
    after_exit = await snapshot(fleet.db_url)
    for row in after_exit.values():
        if row.status == "in_progress" and row.lease_owner == leaving.owner:
            assert row.lease_left_s is not None
            assert row.lease_left_s <= 0, row
    # Handed-back attempts are taken over at once, not after the 30 s lease.
    total = len(ids) + len(late_ids)
    await wait_all_terminal(fleet.db_url, total, LEASE_S - 10)

    final = await snapshot(fleet.db_url)
    for row in final.values():
        assert row.history == row.expected_history(), row
    # No attempt starts once the shutdown has begun.
    begun = leaving.logs.index(leaving.events(events.SHUTDOWN_BEGUN)[0])
    assert not [e for e in leaving.logs[begun:] if e.get("status") == "in_progress"]
    started = {
        uuid.UUID(e["task_id"]) for e in leaving.events(events.STATUS_CHANGED, status="in_progress")
    }
    # Every attempt the leaving instance held: started ones, and claimed ones that no
    # processor had started yet (handed back unstarted).
    ours = started | set(held)
    finished = [i for i in ours if final[i].attempts == 1]
    # Every second attempt is one the leaving instance handed back: of an attempt it ran
    # or had claimed, or of a task it created already claimed just as it began to stop.
    handed_back = [i for i, row in final.items() if row.attempts == 2]
    assert set(ours) - set(finished) <= set(handed_back)
    for task_id in finished:  # committed (and logged) by the leaving instance before it exited
        assert task_id in started
        assert leaving.events(
            events.STATUS_CHANGED, task_id=str(task_id), status=final[task_id].status
        )
    for task_id in set(handed_back) & started:
        assert leaving.events(
            "attempt abandoned at shutdown, to be handed back", task_id=str(task_id)
        )
    [stopped] = leaving.events(events.PIPELINE_STOPPED)
    assert stopped["handed_back"] == len(handed_back)
    assert finished, "no attempt finished within the grace period"
    assert handed_back, "no attempt was left to hand back"
    recovered = value((await taker.metrics()), "taskflow_lease_recoveries_total")
    assert recovered == len(handed_back)
    print(
        f"\n{signum.name}: {len(finished)} attempts finished in the grace period, "
        f"{len(handed_back)} handed back; creates during shutdown: {dict(outcomes)}"
    )
