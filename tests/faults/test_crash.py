"""Crash recovery: `kill -9` with hundreds of tasks in flight loses nothing.

Every task the dead process held — running attempts, and tasks that were `new` in
PostgreSQL but waiting only in its memory — ends terminal within the lease plus a claim
interval, after a restart or on another live instance. The running ones get a second
attempt (one more `in_progress` row); no task ever gets two terminal rows.
"""

from __future__ import annotations

import signal
import time
import uuid

from taskflow_bench.harness.metrics import value
from tests.faults.conftest import Fleet
from tests.faults.tasks import TaskRow, create_tasks, snapshot, wait_all_terminal, wait_counts

LEASE_S = 3.0
CLAIM_INTERVAL_S = 1.0
WORK = {"work_min_s": 2.0, "work_max_s": 3.0}
TASKS = 500
# Recovery must take at most lease + claim interval + the last attempt's work; the rest
# is slack for a loaded two-core machine.
RECOVERY_BOUND_S = LEASE_S + CLAIM_INTERVAL_S + 3.0 + 25.0


def _check_recovery(
    before: dict[uuid.UUID, TaskRow], after: dict[uuid.UUID, TaskRow], dead_owner: str
) -> tuple[int, int]:
    """Assert every task's fate; return (recovered attempts, tasks found only in memory)."""
    recovered = in_memory = 0
    for task_id, was in before.items():
        now = after[task_id]
        assert now.terminal, now
        assert now.history == now.expected_history(), now
        if was.status == "in_progress" and was.lease_owner == dead_owner:
            # The dead process's running attempt: exactly one new attempt.
            assert now.attempts == was.attempts + 1, (was, now)
            recovered += 1
        elif was.status == "new":
            assert now.attempts == 1, (was, now)
            in_memory += 1
        elif was.terminal:
            assert now == was, (was, now)
    return recovered, in_memory


async def _kill_in_flight(fleet: Fleet, victim_settings: dict[str, float]) -> tuple[str, float]:
    """Start the victim, load it, kill -9 it mid-flight; return its owner id and kill time."""
    victim = await fleet.start("victim", **victim_settings)
    await create_tasks(fleet.session, victim.url, TASKS, concurrency=50)
    await wait_counts(fleet.db_url, 30, in_progress=100)
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await victim.wait_exit(15) == -signal.SIGKILL
    return victim.owner, killed_at


async def test_kill_9_then_restart_recovers_every_task(fleet: Fleet) -> None:
    owner, _ = await _kill_in_flight(fleet, {"processors": 250, "lease_s": LEASE_S, **WORK})
    before = await snapshot(fleet.db_url)
    held = [t for t in before.values() if t.status in ("new", "in_progress")]
    assert len(held) >= 200, f"only {len(held)} tasks in flight at the kill"

    restarted = await fleet.start("restarted", processors=250, lease_s=LEASE_S, **WORK)
    ready_at = time.monotonic()
    await wait_all_terminal(fleet.db_url, TASKS, RECOVERY_BOUND_S)
    recovery_s = time.monotonic() - ready_at

    after = await snapshot(fleet.db_url)
    recovered, in_memory = _check_recovery(before, after, owner)
    assert recovered > 0
    assert in_memory > 0
    assert in_memory + recovered == len(held)
    metrics = await restarted.metrics()
    assert value(metrics, "taskflow_lease_recoveries_total") == recovered
    print(
        f"\nrestart: {recovered} attempts recovered, {in_memory} new tasks found, "
        f"all terminal {recovery_s:.1f} s after the restart was ready"
    )


async def test_kill_9_recovered_by_a_live_instance(fleet: Fleet) -> None:
    settings = {"processors": 250, "lease_s": LEASE_S, **WORK}
    # Fewer processors than the backlog: some tasks are still `new` at the kill.
    survivor = await fleet.start("survivor", **{**settings, "processors": 100})
    owner, killed_at = await _kill_in_flight(fleet, settings)
    before = await snapshot(fleet.db_url)
    held = [t for t in before.values() if t.status == "in_progress" and t.lease_owner == owner]
    assert len(held) >= 50, f"the victim held only {len(held)} running attempts"

    await wait_all_terminal(fleet.db_url, TASKS, RECOVERY_BOUND_S)
    recovery_s = time.monotonic() - killed_at
    assert survivor.running

    after = await snapshot(fleet.db_url)
    recovered, in_memory = _check_recovery(before, after, owner)
    assert recovered == len(held)
    assert in_memory > 0
    survivor_owned = [
        t for t in before.values() if t.status == "in_progress" and t.lease_owner != owner
    ]
    for was in survivor_owned:
        assert after[was.id].attempts == was.attempts == 1
    metrics = await survivor.metrics()
    assert value(metrics, "taskflow_lease_recoveries_total") == recovered
    print(
        f"\nlive instance: {recovered} attempts recovered, {in_memory} new tasks found, "
        f"all terminal {recovery_s:.1f} s after the kill"
    )
