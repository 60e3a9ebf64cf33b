"""The processor pool against the in-memory store (through a real status writer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import pytest

from taskflow.actors.attempts import Attempts
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.errors import StoreError
from taskflow.lifecycle import Grace
from taskflow.metrics import Metrics
from taskflow.models import Claim, Status
from tests.unit.helpers import eventually, finished_futures, new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


@dataclass
class Rig:
    """A pool of processors fed by hand, writing through a running status writer."""

    store: MemoryStore
    metrics: Metrics
    inbox: asyncio.Queue[Claim]
    pool: ProcessorPool
    attempts: Attempts  # with no slot taken out, so `free` counts the slots freed
    tasks: list[asyncio.Task[None]]

    @property
    def freed(self) -> int:
        return self.attempts.free

    async def claim(self, count: int) -> list[Claim]:
        await self.store.insert_tasks([new_task(f"t{i}") for i in range(count)])
        claims = [claim for claim, _ in await self.store.claim(OWNER, 30, count)]
        for claim in claims:
            self.inbox.put_nowait(claim)
        return claims


class MakeRig(Protocol):
    def __call__(self, failure_rate: float, size: int = 4, work_s: float = 0) -> Rig: ...


@pytest.fixture
async def make_rig() -> AsyncIterator[MakeRig]:
    """Start rigs; stop them when the test ends."""
    started: list[Rig] = []

    def make(failure_rate: float, size: int = 4, work_s: float = 0) -> Rig:
        store, metrics = MemoryStore(), Metrics()
        inbox: asyncio.Queue[Claim] = asyncio.Queue(100)
        writer = StatusWriter(store, metrics, owner=OWNER, capacity=size)
        attempts = Attempts(0)
        pool = ProcessorPool(
            inbox,
            writer,
            metrics,
            attempts,
            size=size,
            work_min_s=work_s,
            work_max_s=work_s,
            failure_rate=failure_rate,
        )
        writer.start()
        pool.start()
        rig = Rig(store, metrics, inbox, pool, attempts, [*writer.tasks, *pool.tasks])
        started.append(rig)
        return rig

    yield make
    for rig in started:
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)


def no_processor_died(rig: Rig) -> None:
    for task in rig.tasks:
        if task.done():
            raise AssertionError(f"{task.get_name()} died: {task.exception()!r}")


async def test_failure_rate_0_completes_every_task(make_rig: MakeRig) -> None:
    rig: Rig = make_rig(failure_rate=0.0)
    claims = await rig.claim(10)
    await eventually(lambda: rig.freed == 10)
    assert await rig.pool.wait_idle(1)  # the slot is freed before the commit

    for claim in claims:
        task = rig.store.tasks[claim.task_id]
        assert task.status is Status.COMPLETED
        assert task.result is not None
        assert task.error is None
        assert task.finished_at is not None
        assert rig.store.history(claim.task_id) == [
            (Status.NEW, 0),
            (Status.IN_PROGRESS, 1),
            (Status.COMPLETED, 1),
        ]
    assert sample(rig.metrics, "taskflow_status_changes_total", status="completed") == 10
    assert sample(rig.metrics, "taskflow_processing_seconds_count", status="completed") == 10
    assert list(rig.attempts.held()) == []
    assert await rig.pool.wait_idle(1)
    no_processor_died(rig)


async def test_failure_rate_1_fails_every_task(make_rig: MakeRig) -> None:
    rig: Rig = make_rig(failure_rate=1.0)
    claims = await rig.claim(10)
    await eventually(lambda: rig.freed == 10)
    assert await rig.pool.wait_idle(1)  # the slot is freed before the commit

    for claim in claims:
        task = rig.store.tasks[claim.task_id]
        assert task.status is Status.FAILED
        assert task.error
        assert task.result is None
        assert [s for s, _ in rig.store.history(claim.task_id)] == [
            Status.NEW,
            Status.IN_PROGRESS,
            Status.FAILED,
        ]
    assert sample(rig.metrics, "taskflow_status_changes_total", status="failed") == 10
    no_processor_died(rig)


async def test_a_fenced_outcome_is_not_written_and_the_processor_carries_on(
    make_rig: MakeRig,
) -> None:
    rig: Rig = make_rig(failure_rate=0.0)
    await rig.store.insert_tasks([new_task("stolen")])
    [(stale, _)] = await rig.store.claim(OWNER, 30, 1)
    rig.store.advance(31)  # our lease ran out; another instance took the task over
    [(current, recovered)] = await rig.store.claim("instance-b", 30, 1)
    assert recovered

    rig.inbox.put_nowait(stale)
    await eventually(lambda: rig.freed == 1)
    assert await rig.pool.wait_idle(1)  # the slot is freed before the commit
    task = rig.store.tasks[stale.task_id]
    assert (task.status, task.attempts) == (Status.IN_PROGRESS, current.attempt)
    assert sample(rig.metrics, "taskflow_fenced_writes_total") == 1

    fresh = await rig.claim(1)
    await eventually(lambda: rig.freed == 2)
    assert await rig.pool.wait_idle(1)  # the slot is freed before the commit
    assert rig.store.tasks[fresh[0].task_id].status is Status.COMPLETED
    no_processor_died(rig)


async def test_two_attempts_of_one_task_in_this_instance_do_not_crash_a_processor(
    make_rig: MakeRig,
) -> None:
    """After an outage longer than the lease, an instance may claim its own task again."""
    rig: Rig = make_rig(failure_rate=0.0, size=2)
    await rig.store.insert_tasks([new_task("twice")])
    [(first, _)] = await rig.store.claim(OWNER, 30, 1)
    rig.store.advance(31)
    [(second, _)] = await rig.store.claim(OWNER, 30, 1)
    assert first.task_id == second.task_id
    assert second.attempt == first.attempt + 1

    rig.inbox.put_nowait(first)
    rig.inbox.put_nowait(second)
    await eventually(lambda: rig.freed == 2)
    assert await rig.pool.wait_idle(1)  # the slot is freed before the commit
    for _ in range(10):
        await asyncio.sleep(0)

    no_processor_died(rig)
    task = rig.store.tasks[first.task_id]
    assert (task.status, task.attempts) == (Status.COMPLETED, 2)
    assert sample(rig.metrics, "taskflow_fenced_writes_total") == 1
    assert list(rig.attempts.held()) == []
    assert await rig.pool.wait_idle(1)


async def test_an_outcome_refused_for_good_lets_the_task_be_attempted_again(
    make_rig: MakeRig,
) -> None:
    rig: Rig = make_rig(failure_rate=0.0)
    rig.store.fail("finish", *[StoreError("check violation")] * 5)  # the writer's max_errors
    [refused] = await rig.claim(1)
    await eventually(lambda: rig.store.count("finish") == 5 and rig.freed == 1)
    await eventually(lambda: list(rig.attempts.held()) == [])  # the lease keeper lets it go
    assert rig.store.tasks[refused.task_id].status is Status.IN_PROGRESS

    rig.store.advance(31)  # its lease runs out: any instance attempts it again
    [(again, recovered)] = await rig.store.claim(OWNER, 30, 1)
    assert (again.task_id, recovered) == (refused.task_id, True)
    rig.inbox.put_nowait(again)
    await eventually(lambda: rig.store.tasks[refused.task_id].status is Status.COMPLETED)
    no_processor_died(rig)


async def test_attempts_that_work_a_while_leave_nothing_behind(make_rig: MakeRig) -> None:
    """A service runs for months: a finished attempt keeps no future, timer or entry."""
    rig: Rig = make_rig(failure_rate=0.0, size=50, work_s=0.001)
    before = finished_futures()
    for _ in range(4):
        await rig.claim(50)
        await eventually(
            lambda: all(task.status is Status.COMPLETED for task in rig.store.tasks.values())
        )
    assert await rig.pool.wait_idle(10)
    assert list(rig.attempts.held()) == []
    kept = finished_futures() - before
    assert kept < 50, f"{kept} futures of the 200 finished attempts are still referenced"
    no_processor_died(rig)


async def test_attempts_stay_held_until_their_outcome_is_committed(make_rig: MakeRig) -> None:
    rig: Rig = make_rig(failure_rate=0.0, size=3)
    rig.store.hold("finish")
    claims = await rig.claim(3)
    await eventually(lambda: rig.store.count("finish") >= 1 and len(rig.attempts.held()) == 3)
    assert set(rig.attempts.held()) == {c.task_id for c in claims}
    assert not await rig.pool.wait_idle(0.01)
    # A processor frees its slot for the dispatcher once its outcome is handed over,
    # before the commit; the attempt stays held (and the pool not idle) until the commit.
    await eventually(lambda: rig.freed == 3)
    assert len(rig.attempts.held()) == 3
    rig.store.let_go("finish")
    assert await rig.pool.wait_idle(1)
    assert list(rig.attempts.held()) == []


async def test_finish_abandons_attempts_still_working_and_keeps_them_held() -> None:
    store, metrics = MemoryStore(), Metrics()
    inbox: asyncio.Queue[Claim] = asyncio.Queue(10)
    writer = StatusWriter(store, metrics, owner=OWNER, capacity=2)
    attempts = Attempts(0)
    pool = ProcessorPool(
        inbox, writer, metrics, attempts, size=2, work_min_s=3600, work_max_s=3600,
        failure_rate=0.0,
    )  # fmt: skip
    writer.start()
    pool.start()
    try:
        await store.insert_tasks([new_task(f"t{i}") for i in range(2)])
        claims = [claim for claim, _ in await store.claim(OWNER, 30, 2)]
        for claim in claims:
            inbox.put_nowait(claim)
        await eventually(lambda: len(attempts.held()) == 2)

        # Abandoned at the end of the grace, at once: the flush bound is for commits.
        ends = asyncio.get_running_loop().time() + 0.01
        await asyncio.wait_for(pool.finish(Grace(ends=ends, flush_s=60)), 10)

        assert pool.all_finished is False
        assert all(task.done() for task in pool.tasks)
        assert set(attempts.held()) == {c.task_id for c in claims}  # for the lease keeper
        assert store.count("finish") == 0
        assert all(store.tasks[c.task_id].status is Status.IN_PROGRESS for c in claims)
    finally:
        await pool.cancel_loops()
        await writer.cancel_loops()
