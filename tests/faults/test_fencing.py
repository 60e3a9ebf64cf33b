"""Fencing: an attempt whose lease ran out never writes over a newer attempt.

First the rule itself, on `TaskStore` against the real PostgreSQL; then with real
processes: one is paused (SIGSTOP) past its lease, another instance — or the paused one
itself, once resumed — starts new attempts, and the stale outcomes are rejected, logged
and counted while every task ends with the newer attempt's outcome.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import pytest

from taskflow.actors.attempts import Attempts
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.db.store import TaskStore
from taskflow.metrics import Metrics
from taskflow.models import Claim, NewTask, Outcome, Source, Status
from taskflow_bench.harness import events
from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import TaskRow, create_tasks, snapshot, terminal_write, wait_all_terminal

LEASE_S = 3.0


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TaskStore]:
    """A TaskStore on the test's database."""
    async with TaskStore.connect(db_url, max_size=2) as store:
        yield store


async def _one_task(store: TaskStore) -> uuid.UUID:
    new = NewTask("fenced", None, {}, Source.HTTP)
    await store.insert_tasks([new])
    return new.id


def _done(claim: Claim) -> Outcome:
    return Outcome(claim, Status.COMPLETED, result={"attempt": claim.attempt})


async def test_stale_attempt_cannot_finish_over_a_newer_one(store: TaskStore, db_url: str) -> None:
    task_id = await _one_task(store)
    [(first, recovered)] = await store.claim("instance-a", 30, 10)
    assert (first.task_id, first.attempt, recovered) == (task_id, 1, False)
    await store.release([task_id], "instance-a")  # as if its lease had run out
    [(second, recovered)] = await store.claim("instance-b", 30, 10)
    assert (second.attempt, recovered) == (2, True)

    assert await store.finish([_done(first)], "instance-a") == set()
    assert await store.renew([task_id], "instance-a", 30) == {}
    assert await store.finish([_done(second)], "instance-b") == {(task_id, 2)}
    # Once terminal, the stale attempt is still rejected, and nothing raises.
    assert await store.finish([_done(first)], "instance-a") == set()

    row = (await snapshot(db_url))[task_id]
    assert row.status == "completed"
    assert row.result == {"attempt": 2}
    assert row.history == (("new", 0), ("in_progress", 1), ("in_progress", 2), ("completed", 2))


async def test_a_retried_finish_that_had_committed_counts_as_written(
    store: TaskStore, db_url: str
) -> None:
    # The connection broke after the commit but before the answer: the status writer
    # retries. That is the attempt's own outcome, not a fenced write, and it is not
    # written a second time.
    task_id = await _one_task(store)
    [(claim, _)] = await store.claim("instance-a", 30, 10)
    assert await store.finish([_done(claim)], "instance-a") == {(task_id, 1)}
    failed = Outcome(claim, Status.FAILED, error="a different outcome on retry")
    assert await store.finish([failed], "instance-a") == {(task_id, 1)}
    row = (await snapshot(db_url))[task_id]
    assert (row.status, row.result) == ("completed", {"attempt": 1})
    assert row.history == (("new", 0), ("in_progress", 1), ("completed", 1))


async def test_stale_and_current_attempt_in_one_batch(store: TaskStore, db_url: str) -> None:
    task_id = await _one_task(store)
    [(first, _)] = await store.claim("instance-a", 30, 10)
    await store.release([task_id], "instance-a")
    [(second, _)] = await store.claim("instance-a", 30, 10)
    written = await store.finish([_done(first), _done(second)], "instance-a")
    assert written == {(task_id, 2)}
    row = (await snapshot(db_url))[task_id]
    assert row.history == (("new", 0), ("in_progress", 1), ("in_progress", 2), ("completed", 2))


async def test_same_instance_attempts_are_fenced_by_attempt_number(
    store: TaskStore, db_url: str
) -> None:
    task_id = await _one_task(store)
    [(first, _)] = await store.claim("instance-a", 30, 10)
    await store.release([task_id], "instance-a")
    [(second, recovered)] = await store.claim("instance-a", 30, 10)
    assert (second.attempt, recovered) == (2, True)

    assert await store.finish([_done(first)], "instance-a") == set()
    assert await store.finish([_done(second)], "instance-a") == {(task_id, 2)}
    row = (await snapshot(db_url))[task_id]
    assert row.result == {"attempt": 2}
    assert row.history == row.expected_history()


async def test_expired_lease_without_a_newer_attempt_may_still_finish(
    store: TaskStore, db_url: str
) -> None:
    # Fencing is against newer attempts, not against the clock: while nobody has started
    # another attempt, the late outcome is still the only one and is kept.
    task_id = await _one_task(store)
    [(first, _)] = await store.claim("instance-a", 30, 10)
    await store.release([task_id], "instance-a")
    assert await store.finish([_done(first)], "instance-a") == {(task_id, 1)}
    assert await store.claim("instance-b", 30, 10) == []
    row = (await snapshot(db_url))[task_id]
    assert (row.status, row.attempts) == ("completed", 1)


async def test_two_attempts_of_one_task_in_one_pool_do_not_clash(
    store: TaskStore, db_url: str
) -> None:
    # The dispatcher never claims a task its own processors still run; should two
    # attempts meet in one pool anyway, the older is fenced and the newer wins.
    task_id = await _one_task(store)
    [(first, _)] = await store.claim("instance-a", 30, 10)
    await store.release([task_id], "instance-a")
    [(second, _)] = await store.claim("instance-a", 30, 10)
    metrics = Metrics()
    writer = StatusWriter(store, metrics, owner="instance-a", capacity=4)
    inbox: asyncio.Queue[Claim] = asyncio.Queue()
    attempts = Attempts(0)  # no slot taken out: `free` counts the slots freed
    pool = ProcessorPool(
        inbox,
        writer,
        metrics,
        attempts,
        size=2,
        work_min_s=0.2,
        work_max_s=0.3,
        failure_rate=0.0,
    )
    actors = [asyncio.create_task(writer.run())]
    actors += [asyncio.create_task(pool.run(i)) for i in range(2)]
    try:
        inbox.put_nowait(first)
        inbox.put_nowait(second)
        async with asyncio.timeout(30):
            while attempts.free < 2:  # noqa: ASYNC110 - polls state that has no event
                await asyncio.sleep(0.01)
        assert await pool.wait_idle(30)  # both outcomes committed (or fenced)
        assert not any(actor.done() for actor in actors)
        assert list(attempts.held()) == []
    finally:
        for actor in actors:
            actor.cancel()
        await asyncio.gather(*actors, return_exceptions=True)
    assert metrics.registry.get_sample_value("taskflow_fenced_writes_total") == 1
    row = (await snapshot(db_url))[task_id]
    assert (row.status, row.attempts) == ("completed", 2)
    assert row.history == row.expected_history()


async def _load_and_pause(fleet: Fleet, paused: Service) -> dict[uuid.UUID, TaskRow]:
    """Give `paused` running attempts and SIGSTOP it; return those attempts."""
    await create_tasks(fleet.session, paused.url, 60, concurrency=30)
    async with asyncio.timeout(30):
        while True:
            rows = await snapshot(fleet.db_url)
            if sum(t.status == "in_progress" for t in rows.values()) >= 20:
                break
            await asyncio.sleep(0.05)
    paused.signal(signal.SIGSTOP)
    await asyncio.sleep(0.5)  # a claim sent just before the stop is committed by now
    rows = await snapshot(fleet.db_url)
    return {i: t for i, t in rows.items() if t.status == "in_progress"}


async def _wait_newer_attempts(fleet: Fleet, held: dict[uuid.UUID, TaskRow]) -> None:
    """Wait until every attempt in `held` has been followed by a newer one."""
    async with asyncio.timeout(LEASE_S + 30):
        while True:
            rows = await snapshot(fleet.db_url)
            if all(rows[i].attempts > held[i].attempts for i in held):
                return
            await asyncio.sleep(0.1)


async def test_paused_instance_cannot_overwrite_the_new_attempt(fleet: Fleet) -> None:
    work = {"work_min_s": 2.0, "work_max_s": 3.0, "lease_s": LEASE_S}
    paused = await fleet.start("paused", processors=100, **work)
    held = await _load_and_pause(fleet, paused)
    # Started while the first one is paused, so that it holds every running attempt.
    other = await fleet.start("other", processors=100, **work)
    await _wait_newer_attempts(fleet, held)
    paused.signal(signal.SIGCONT)

    await wait_all_terminal(fleet.db_url, 60, 60)
    async with asyncio.timeout(60):  # every stale attempt gets to its (rejected) write
        while True:
            if all(paused.events(events.FENCED, task_id=str(i)) for i in held):
                break
            await asyncio.sleep(0.1)
    after = await snapshot(fleet.db_url)
    for task_id, was in held.items():
        now = after[task_id]
        assert now.attempts == was.attempts + 1, now
        assert now.history == now.expected_history(), now
        # The outcome is the newer attempt's, as the other instance logged it.
        assert terminal_write(other, task_id, now.attempts)["status"] == now.status
        [fenced] = paused.events(events.FENCED, task_id=str(task_id))
        assert fenced["attempt"] == was.attempts
    assert paused.running
    assert other.running
    paused_metrics = await paused.metrics()
    assert value(paused_metrics, "taskflow_fenced_writes_total") == len(held)
    other_metrics = await other.metrics()
    assert value(other_metrics, "taskflow_lease_recoveries_total") == len(held)


async def test_paused_instance_resumes_next_to_its_own_new_attempts(fleet: Fleet) -> None:
    # Alone, the instance that was paused may itself start the newer attempt of a task
    # it is still running: the two attempts meet in one process and must not clash.
    paused = await fleet.start(
        "paused",
        processors=100,
        work_min_s=5.0,
        work_max_s=7.0,
        lease_s=LEASE_S,
    )
    held = await _load_and_pause(fleet, paused)
    await asyncio.sleep(LEASE_S + 1.5)
    paused.signal(signal.SIGCONT)

    await wait_all_terminal(fleet.db_url, 60, 60)
    after = await snapshot(fleet.db_url)
    for task_id in held:
        assert after[task_id].history == after[task_id].expected_history(), after[task_id]
    assert paused.running, paused.tail()
    async with fleet.session.get(f"{paused.url}/health/live") as response:
        assert response.status == 200
    assert not paused.events(events.ACTOR_DIED)
